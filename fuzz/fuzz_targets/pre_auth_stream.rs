//! The pre-authentication byte stream: the packet reader `negotiate` uses, fed arbitrary
//! bytes packet after packet, each packet parsed and classified as `negotiate` would.
//!
//! `negotiate` itself needs a `TcpStream` (it peeks for direct TLS and probes the kernel
//! socket buffer for pipelined bytes), so this target drives the reader it runs on
//! (`read_startup_packet` over an in-memory stream) plus `StartupPacket::decode` and
//! `classify`; the TCP- and TLS-specific decisions are covered by the adversarial suite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::frontend::params::classify;
use redshift_iam_proxy::net::messages::startup::{
    read_startup_packet, StartupPacket, MAX_STARTUP_PACKET_LENGTH,
};
use redshift_iam_proxy::net::messages::Decode;

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut input = data;
        // A client gets at most a handful of packets before TLS; bound the loop anyway.
        for _ in 0..64 {
            let before = input.len();
            match read_startup_packet(&mut input).await {
                Ok(None) | Err(_) => return,
                Ok(Some(Err(_))) => return,
                Ok(Some(Ok(body))) => {
                    assert!(body.len() + 4 <= MAX_STARTUP_PACKET_LENGTH);
                    assert_eq!(before - input.len(), body.len() + 4, "reader over-read");
                    match StartupPacket::decode(&body) {
                        Ok(StartupPacket::Startup(msg)) => {
                            let _ = classify(&msg);
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        }
    });
});
