//! Startup-packet parsing (`StartupPacket::decode`), parameter classification and the
//! Redshift parameter table (with its `options` rewriting): no input may panic, and a
//! StartupMessage that parses re-encodes to bytes that parse the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_config::TargetKind;
use redshift_iam_proxy::backend::startup_params::upstream_params;
use redshift_iam_proxy::frontend::params::classify;
use redshift_iam_proxy::net::messages::{Decode, Encode, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = StartupPacket::decode(data) else {
        return;
    };
    if let StartupPacket::Startup(msg) = packet {
        let wire = msg.encode();
        assert_eq!(
            StartupPacket::decode(&wire[4..]),
            Ok(StartupPacket::Startup(msg.clone())),
            "re-encoded StartupMessage parses differently"
        );
        let Ok(c) = classify(&msg) else {
            return;
        };
        assert!(!c.startup.user.is_empty());
        for allow_options in [false, true] {
            let upstream = upstream_params(TargetKind::Provisioned, &c.startup.params, allow_options);
            // Nothing forwarded upstream may be a protocol option, `replication`, a
            // parameter Redshift refuses, or `options` where the listener forbids it.
            for (name, _) in &upstream.forwarded {
                assert!(!name.starts_with("_pq_."), "{name}");
                assert_ne!(name, "replication");
                assert!(!name.eq_ignore_ascii_case("IntervalStyle"), "{name}");
                assert!(allow_options || !name.eq_ignore_ascii_case("options"));
            }
        }
    }
});
