//! Configuration parsing and validation (`Config::from_toml`) on arbitrary text: errors,
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ =
        proxy_config::Config::from_toml(text, Path::new("fuzz.toml"), Path::new("/nonexistent"));
});
