//! Startup-packet parsing (`StartupPacket::parse`) and parameter classification: no input
//! may panic, and a StartupMessage that parses re-encodes to bytes that parse the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::frontend::params::classify;
use redshift_iam_proxy::net::messages::startup::StartupPacket;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = StartupPacket::parse(data) else {
        return;
    };
    if let StartupPacket::Startup(msg) = packet {
        let wire = msg.encode();
        assert_eq!(
            StartupPacket::parse(&wire[4..]),
            Ok(StartupPacket::Startup(msg.clone())),
            "re-encoded StartupMessage parses differently"
        );
        for allow_options in [false, true] {
            if let Ok(c) = classify(&msg, allow_options) {
                assert!(!c.startup.user.is_empty());
                // Nothing forwarded upstream may be a protocol option or `replication`.
                for (name, _) in &c.startup.params {
                    assert!(!name.starts_with("_pq_."), "{name}");
                    assert_ne!(name, "replication");
                    assert!(allow_options || !name.eq_ignore_ascii_case("options"));
                }
            }
        }
    }
});
