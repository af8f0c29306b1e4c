//! Child processes that cannot outlive the test process.
//!
//! Linux's `PR_SET_PDEATHSIG` delivers a signal to a child when its parent *thread* exits,
//! not when the parent process does. Tests spawn from short-lived threads (every
//! `#[tokio::test]` runs on its own thread), so a server spawned from a test thread would be
//! signalled as soon as that test ends even though other tests still use it. Every child is
//! therefore forked from one dedicated thread that lives as long as the process.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

type SpawnJob = (Command, Signal, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so `recv` never fails and this thread only
                // ends with the process, which is exactly when children must die.
                while let Ok((mut command, signal, reply)) = rx.recv() {
                    let _ = reply.send(spawn_here(&mut command, signal));
                }
            })
            .expect("cannot start the testkit spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_here(command: &mut Command, signal: Signal) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl; then nobody would signal us.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Spawns `command` so that it receives `death_signal` when the test process exits for any
/// reason (including a panic or SIGKILL of the test binary).
pub fn spawn_tied_to_test(command: Command, death_signal: Signal) -> io::Result<Child> {
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((command, death_signal, reply_tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread dropped the request"))?
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `first` and waits up to `grace`; then SIGKILLs and reaps. Returns the exit status.
pub fn terminate(child: &mut Child, first: Signal, grace: Duration) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    // ESRCH only means it exited meanwhile; the wait below reaps it either way.
    let _ = signal::kill(pid, first);
    if let Some(status) = wait_timeout(child, grace)? {
        return Ok(status);
    }
    child.kill()?;
    child.wait()
}
