//! The audit writer: a bounded queue and the thread that drains it into a file (or
//! standard output), and the file's rotation.
//!
//! Rotation loses no record, whichever way it happens:
//! - **External** (logrotate's default `create` mode): the rotator renames the file and
//!   sends SIGHUP; the reload queues a reopen behind every record already queued, so those
//!   land in the renamed file and later ones in the new file.
//! - **By size** (`[audit] max_file_size`): the writer itself renames `path` to `path.1`
//!   (shifting older ones up to `max_files`) between two records, after flushing.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{error, info, warn};

use super::AuditRecord;

/// Where audit records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// Size-based rotation of a file destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rotation {
    max_size: u64,
    /// Rotated files kept (`path.1` .. `path.keep`).
    keep: usize,
}

/// A destination and how it rotates: what a (re)open needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    destination: Destination,
    rotation: Option<Rotation>,
}

impl Target {
    fn from_config(config: &proxy_config::AuditConfig) -> Target {
        let destination = match &config.path {
            Some(p) => Destination::File(p.clone()),
            None => Destination::Stdout,
        };
        let rotation = config.max_file_size.map(|size| Rotation {
            max_size: size.0,
            keep: config.max_files.max(1),
        });
        Target {
            destination,
            rotation,
        }
    }

    fn open_error(&self, source: io::Error) -> AuditOpenError {
        AuditOpenError {
            path: match &self.destination {
                Destination::File(p) => p.clone(),
                Destination::Stdout => PathBuf::from("<stdout>"),
            },
            source,
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        // Audit records name people and roles: readable by the proxy's user and group only.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

/// The audit file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit file {}: {source}", path.display())]
pub struct AuditOpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The open destination, with the bytes its file holds (for size rotation).
struct Sink {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
    size: u64,
}

impl Sink {
    fn open(target: Target) -> io::Result<Sink> {
        let (out, size): (Box<dyn Write + Send>, u64) = match &target.destination {
            Destination::Stdout => (Box::new(io::stdout()), 0),
            Destination::File(path) => {
                let file = open_append(path)?;
                let size = file.metadata()?.len();
                (Box::new(file), size)
            }
        };
        Ok(Sink {
            target,
            out: BufWriter::new(out),
            size,
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.out, "{line}")?;
        self.size += line.len() as u64 + 1;
        match (&self.target.destination, self.target.rotation) {
            (Destination::File(path), Some(rotation)) if self.size >= rotation.max_size => {
                let path = path.clone();
                self.rotate(&path, rotation);
            }
            _ => {}
        }
        Ok(())
    }

    /// Renames `path` to `path.1` (older files shift up, the oldest beyond `keep` goes)
    /// and continues in a new `path`. A failure is logged and writing goes on in the
    /// current file: a record is never dropped for rotation's sake.
    fn rotate(&mut self, path: &Path, rotation: Rotation) {
        if let Err(e) = self.out.flush() {
            error!(error = %e, "cannot flush the audit file before rotating it");
            return;
        }
        let numbered = |n: usize| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..rotation.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(error = %e, "cannot shift a rotated audit file"),
            }
        }
        if let Err(e) = std::fs::rename(path, numbered(1)) {
            error!(error = %e, path = %path.display(), "cannot rotate the audit file; it keeps growing");
            return;
        }
        match open_append(path) {
            Ok(file) => {
                self.out = BufWriter::new(Box::new(file));
                self.size = 0;
                info!(path = %path.display(), "audit file rotated");
            }
            // The renamed file is still open: records keep going there until a reopen works.
            Err(e) => {
                error!(error = %e, path = %path.display(), "cannot open a new audit file after rotating")
            }
        }
    }
}

enum Message {
    Line(String),
    /// A statement record (`[audit] statements`), counted apart.
    Statement(String),
    Reopen(Target),
    /// Write out everything before it and stop.
    Close,
}

struct Writer {
    tx: SyncSender<Message>,
    thread: JoinHandle<()>,
}

/// What the writer thread counts.
#[derive(Debug, Default)]
struct WriterCounts {
    written: AtomicU64,
    failed: AtomicU64,
    statements_written: AtomicU64,
    /// Statement records in the queue: bounded by the statement capacity, so statements
    /// never take the room of connection records.
    statements_queued: AtomicUsize,
}

/// The audit trail: a bounded queue and its writer thread. Cheap to share (`Arc`).
///
/// The queue holds `queue_capacity` connection records plus `statement_queue_capacity`
/// statement records; each kind is dropped (and counted) when its own share is full.
pub struct AuditLog {
    writer: Mutex<Option<Writer>>,
    /// A clone of the writer's sender, for the hot path (no lock).
    tx: Option<SyncSender<Message>>,
    counts: Arc<WriterCounts>,
    dropped: AtomicU64,
    statement_capacity: usize,
    statements_dropped: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.tx.is_some())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// An audit log that discards every record (`[audit] enabled = false`).
    pub fn disabled() -> AuditLog {
        AuditLog {
            writer: Mutex::new(None),
            tx: None,
            counts: Arc::default(),
            dropped: AtomicU64::new(0),
            statement_capacity: 0,
            statements_dropped: AtomicU64::new(0),
        }
    }

    /// Opens `destination` now (so a bad path fails start-up) and starts the writer,
    /// without size rotation, with room for `capacity` records of each kind.
    pub fn start(destination: Destination, capacity: usize) -> Result<AuditLog, AuditOpenError> {
        let target = Target {
            destination,
            rotation: None,
        };
        AuditLog::start_target(target, capacity, capacity)
    }

    fn start_target(
        target: Target,
        capacity: usize,
        statement_capacity: usize,
    ) -> Result<AuditLog, AuditOpenError> {
        let sink = Sink::open(target.clone()).map_err(|e| target.open_error(e))?;
        let statement_capacity = statement_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1) + statement_capacity);
        let counts = Arc::new(WriterCounts::default());
        let thread = {
            let counts = counts.clone();
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_loop(rx, sink, &counts))
                .map_err(|source| AuditOpenError {
                    path: PathBuf::from("<audit writer thread>"),
                    source,
                })?
        };
        Ok(AuditLog {
            writer: Mutex::new(Some(Writer {
                tx: tx.clone(),
                thread,
            })),
            tx: Some(tx),
            counts,
            dropped: AtomicU64::new(0),
            statement_capacity,
            statements_dropped: AtomicU64::new(0),
        })
    }

    /// Builds the audit log `[audit]` asks for.
    pub fn from_config(config: &proxy_config::AuditConfig) -> Result<AuditLog, AuditOpenError> {
        if !config.enabled {
            return Ok(AuditLog::disabled());
        }
        AuditLog::start_target(
            Target::from_config(config),
            config.queue_capacity,
            config.statement_queue_capacity,
        )
    }

    /// Queues one record. Never blocks: a full queue drops the record and counts it.
    pub fn record(&self, record: &AuditRecord) {
        let Some(tx) = &self.tx else { return };
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                // Cannot happen for this plain data type; count it rather than panic.
                error!(error = %e, "cannot serialise an audit record");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One warning per power of two keeps a stuck disk from flooding the log.
                if n.is_power_of_two() {
                    warn!(dropped = n, "audit queue full: audit records dropped");
                }
            }
        }
    }

    /// Whether records are written at all (`[audit] enabled`).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one statement record (a JSON line). Never blocks: when the statement share
    /// of the queue is full, the record is dropped and counted.
    pub fn statement(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        let queued = &self.counts.statements_queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= self.statement_capacity {
            queued.fetch_sub(1, Ordering::Relaxed);
            return self.statement_not_queued();
        }
        if tx.try_send(Message::Statement(line)).is_err() {
            queued.fetch_sub(1, Ordering::Relaxed);
            self.statement_not_queued();
        }
    }

    /// Counts a statement record that could not be queued.
    pub fn statement_not_queued(&self) {
        let n = self.statements_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // One warning per power of two keeps a stuck disk from flooding the log.
        if n.is_power_of_two() {
            warn!(
                dropped = n,
                "audit statement queue full: statement records dropped"
            );
        }
    }

    /// Statement records written so far.
    pub fn statements_written(&self) -> u64 {
        self.counts.statements_written.load(Ordering::Relaxed)
    }

    /// Statement records dropped because their queue was full.
    pub fn statements_dropped(&self) -> u64 {
        self.statements_dropped.load(Ordering::Relaxed)
    }

    /// Reopens the destination `[audit]` names (every reload: log rotation, a new path,
    /// new rotation settings). The new file is opened here, so an unusable path is
    /// reported and the current destination kept. Records queued before this land in the
    /// old file, later ones in the new.
    pub fn reopen(&self, config: &proxy_config::AuditConfig) -> Result<(), AuditOpenError> {
        if self.tx.is_none() {
            // Enabling an audit log that was off at start needs a restart (documented).
            return Ok(());
        }
        let target = Target::from_config(config);
        if let Destination::File(path) = &target.destination {
            open_append(path).map_err(|e| target.open_error(e))?;
        }
        let guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = guard.as_ref() {
            // Blocking send: a reopen must not be lost behind a full queue. Called from
            // reload, which runs on a blocking thread.
            let _ = w.tx.send(Message::Reopen(target));
        }
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records the writer failed to write (I/O errors).
    pub fn write_errors(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Writes out everything queued and stops the writer. Blocks: call it from a blocking
    /// context (process exit). Later records are dropped.
    pub fn close(&self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Writer { tx, thread }) = writer {
            let _ = tx.send(Message::Close);
            let _ = thread.join();
        }
    }
}

/// How long the writer lets records gather once they start coming. A writer that waits in
/// `recv` is woken by every record (a futex wake and a context switch each, which cost as
/// much as relaying a small query); one that sleeps this long between drains while records
/// keep coming is never woken by a sender, and writes each batch with one flush.
const LINGER: Duration = Duration::from_millis(10);

fn write_loop(rx: Receiver<Message>, mut sink: Sink, counts: &WriterCounts) {
    // Idle: wait for the first record. Busy: drain every LINGER until a drain finds nothing.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            let mut drained = 0;
            while let Some(message) = next {
                if !write_message(message, &mut sink, counts) {
                    // Closed: what was queued meanwhile is still written; senders after
                    // this thread ends find the queue disconnected and count a drop.
                    while let Ok(late) = rx.try_recv() {
                        write_message(late, &mut sink, counts);
                    }
                    let _ = sink.out.flush();
                    return;
                }
                drained += 1;
                next = rx.try_recv().ok();
            }
            if sink.out.flush().is_err() {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
            if drained == 0 {
                break;
            }
            std::thread::sleep(LINGER);
            next = rx.try_recv().ok();
        }
    }
    let _ = sink.out.flush();
}

/// Handles one queued message; `false` once the log is closed.
fn write_message(message: Message, sink: &mut Sink, counts: &WriterCounts) -> bool {
    let (written, failed) = (&counts.written, &counts.failed);
    match message {
        Message::Close => {
            let _ = sink.out.flush();
            return false;
        }
        Message::Statement(line) => {
            counts.statements_queued.fetch_sub(1, Ordering::Relaxed);
            match sink.write_line(&line) {
                Ok(()) => counts.statements_written.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        Message::Line(line) => match sink.write_line(&line) {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        },
        Message::Reopen(target) => {
            let _ = sink.out.flush();
            match Sink::open(target) {
                Ok(new) => *sink = new,
                Err(e) => error!(error = %e, "cannot reopen the audit file; keeping the old one"),
            }
        }
    }
    true
}

#[cfg(test)]
mod tests;
