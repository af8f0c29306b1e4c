//! Free TCP ports on 127.0.0.1.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before.
///
/// The port is released before returning, so another process may still take it; launchers
/// that bind it (PostgreSQL) retry on a bind failure. Remembering handed-out ports avoids
/// the common in-process race where the kernel offers the same just-closed port to two
/// concurrent tests.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the bound address: {e}"))
            .port();
        if handed_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
    panic!("no unused ephemeral port found after 100 attempts");
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Polls until 127.0.0.1:`port` accepts or `timeout` passes; returns whether it did.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_accepts(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
