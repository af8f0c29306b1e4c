//! [`StatementTracker`]: the statements a client sends, read from its messages as they
//! pass (`[audit] statements`), for the statement audit.
//!
//! [`ClientWatch`](super::statements::ClientWatch) does the framing and hands each message
//! here in pieces: [`begin`](StatementTracker::begin), [`body`](StatementTracker::body)
//! bytes (a message may span any number of reads), [`end`](StatementTracker::end). Only the
//! fields a record needs are read, field by field, so nothing is buffered whole: a
//! statement's text is hashed as it passes and only its first `max_text` bytes are kept;
//! Bind parameter values are skipped unread (their count is all a record says of them).
//!
//! - `Query` (simple protocol) → a record with its text.
//! - `Parse` → a record with the statement name and text; the name's text hash is kept.
//! - `Bind` → no record; the portal is remembered with its statement and parameter count.
//! - `Execute` → a record naming the portal, its statement and that statement's hash.
//! - `Close` forgets a statement or portal.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Names are identifiers: PostgreSQL and Redshift cut them to 63 bytes (NAMEDATALEN 64).
const MAX_NAME: usize = 63;
/// Statements and portals remembered per session; beyond it new ones are not (their
/// Execute records then lack the statement).
const MAX_TRACKED: usize = 1024;

/// A statement's text as a record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementText {
    /// The first bytes of the text (at most the configured length, cut on a UTF-8
    /// boundary); invalid UTF-8 shown as U+FFFD.
    pub text: String,
    /// The text was longer than what `text` holds.
    pub truncated: bool,
    /// Length of the whole text in bytes.
    pub length: u64,
    /// SHA-256 of the whole text, as sent.
    pub sha256: [u8; 32],
}

/// One statement the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement<'a> {
    /// A simple-protocol Query.
    Query { text: &'a StatementText },
    /// An extended-protocol Parse (`name` empty for the unnamed statement).
    Parse {
        name: &'a [u8],
        text: &'a StatementText,
    },
    /// An Execute of `portal`, bound (by the last Bind of it) to `statement`, whose text
    /// hashed to `sha256`, with `parameters` values. `None`: the portal's Bind was not seen.
    Execute {
        portal: &'a [u8],
        statement: Option<&'a [u8]>,
        sha256: Option<&'a [u8; 32]>,
        parameters: Option<u16>,
    },
}

/// Where statements go (the audit log; a list in tests). Must never wait.
pub trait StatementSink: Send {
    fn statement(&mut self, statement: Statement<'_>);
}

/// A portal as its Bind left it.
#[derive(Debug)]
struct Portal {
    statement: Vec<u8>,
    parameters: u16,
}

/// The field of the current message being read.
#[derive(Debug)]
enum Field {
    /// A NUL-terminated name, kept up to [`MAX_NAME`] bytes.
    Name(Vec<u8>),
    /// A NUL-terminated statement text.
    Text(TextDigest),
    /// A big-endian integer of `need` bytes.
    Int { value: u32, need: u8 },
    /// Bytes to step over.
    Skip(u64),
    /// Nothing more of the message matters.
    Rest,
}

/// The text of a statement as it passes: hashed whole, its start kept.
#[derive(Debug)]
struct TextDigest {
    hasher: Sha256,
    kept: Vec<u8>,
    length: u64,
}

impl TextDigest {
    fn new() -> Self {
        TextDigest {
            hasher: Sha256::new(),
            kept: Vec::new(),
            length: 0,
        }
    }

    fn push(&mut self, bytes: &[u8], max: usize) {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
        let room = max.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    fn finish(self) -> StatementText {
        let truncated = self.length > self.kept.len() as u64;
        let mut kept = self.kept.as_slice();
        if truncated {
            // A character cut in two by the limit is dropped whole.
            if let Err(e) = std::str::from_utf8(kept) {
                if e.error_len().is_none() {
                    kept = &kept[..e.valid_up_to()];
                }
            }
        }
        StatementText {
            text: String::from_utf8_lossy(kept).into_owned(),
            truncated,
            length: self.length,
            sha256: self.hasher.finalize().into(),
        }
    }
}

/// The message being read and what was read of it so far.
#[derive(Debug)]
struct Message {
    tag: u8,
    /// Index of `field` in the message's layout.
    step: u8,
    field: Field,
    names: Vec<Vec<u8>>,
    ints: Vec<u32>,
    text: Option<StatementText>,
}

/// See the module documentation.
pub struct StatementTracker {
    max_text: usize,
    sink: Box<dyn StatementSink>,
    message: Option<Message>,
    /// Statement name → hash of its text.
    statements: HashMap<Vec<u8>, [u8; 32]>,
    portals: HashMap<Vec<u8>, Portal>,
}

impl std::fmt::Debug for StatementTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementTracker")
            .field("max_text", &self.max_text)
            .field("statements", &self.statements.len())
            .field("portals", &self.portals.len())
            .finish_non_exhaustive()
    }
}

impl StatementTracker {
    /// Keeps at most `max_text` bytes of each statement text; sends records to `sink`.
    pub fn new(max_text: usize, sink: Box<dyn StatementSink>) -> Self {
        StatementTracker {
            max_text,
            sink,
            message: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    /// A message of type `tag` starts.
    pub fn begin(&mut self, tag: u8) {
        self.message = layout(tag, 0, &[]).map(|field| Message {
            tag,
            step: 0,
            field,
            names: Vec::new(),
            ints: Vec::new(),
            text: None,
        });
    }

    /// Bytes of the current message's body.
    pub fn body(&mut self, mut bytes: &[u8]) {
        let Some(m) = self.message.as_mut() else {
            return;
        };
        while !bytes.is_empty() {
            let done = match &mut m.field {
                Field::Rest => return,
                Field::Skip(left) => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    *left == 0
                }
                Field::Int { value, need } => {
                    *value = (*value << 8) | u32::from(bytes[0]);
                    *need -= 1;
                    bytes = &bytes[1..];
                    *need == 0
                }
                Field::Name(name) => {
                    let end = bytes.iter().position(|&b| b == 0);
                    let part = &bytes[..end.unwrap_or(bytes.len())];
                    let room = MAX_NAME.saturating_sub(name.len());
                    name.extend_from_slice(&part[..room.min(part.len())]);
                    bytes = &bytes[end.map_or(bytes.len(), |e| e + 1)..];
                    end.is_some()
                }
                Field::Text(digest) => {
                    let end = bytes.iter().position(|&b| b == 0);
                    digest.push(&bytes[..end.unwrap_or(bytes.len())], self.max_text);
                    bytes = &bytes[end.map_or(bytes.len(), |e| e + 1)..];
                    end.is_some()
                }
            };
            if done {
                m.next_field();
            }
        }
    }

    /// The current message ended. A text cut short by the end (no NUL) counts as read so
    /// far; a name or number cut short does not count.
    pub fn end(&mut self) {
        let Some(mut m) = self.message.take() else {
            return;
        };
        if matches!(m.field, Field::Text(_)) {
            m.close_field();
        }
        match m.tag {
            b'Q' => {
                if let Some(text) = &m.text {
                    self.sink.statement(Statement::Query { text });
                }
            }
            b'P' => {
                let (Some(name), Some(text)) = (m.names.first(), &m.text) else {
                    return;
                };
                // As the server does: a named statement keeps its first text until it is
                // closed (a second Parse of the name is refused, 42P05); the unnamed one is
                // replaced by every Parse.
                let redefined = !name.is_empty() && self.statements.contains_key(name);
                if !redefined
                    && (self.statements.len() < MAX_TRACKED || self.statements.contains_key(name))
                {
                    self.statements.insert(name.clone(), text.sha256);
                }
                self.sink.statement(Statement::Parse { name, text });
            }
            b'B' => {
                let [portal, statement] = &mut m.names[..] else {
                    return;
                };
                // Likewise a named portal stays bound until closed (42P03).
                let rebound = !portal.is_empty() && self.portals.contains_key(portal);
                if !rebound
                    && (self.portals.len() < MAX_TRACKED || self.portals.contains_key(portal))
                {
                    let parameters = m.ints.get(1).map_or(0, |&n| n as u16);
                    let portal = std::mem::take(portal);
                    let statement = std::mem::take(statement);
                    self.portals.insert(
                        portal,
                        Portal {
                            statement,
                            parameters,
                        },
                    );
                }
            }
            b'E' => {
                let Some(portal) = m.names.first() else {
                    return;
                };
                let bound = self.portals.get(portal);
                let statement = bound.map(|p| p.statement.as_slice());
                self.sink.statement(Statement::Execute {
                    portal,
                    statement,
                    sha256: statement.and_then(|s| self.statements.get(s)),
                    parameters: bound.map(|p| p.parameters),
                });
            }
            b'C' => match (m.ints.first(), m.names.first()) {
                (Some(&kind), Some(name)) if kind == u32::from(b'S') => {
                    self.statements.remove(name);
                }
                (Some(&kind), Some(name)) if kind == u32::from(b'P') => {
                    self.portals.remove(name);
                }
                _ => {}
            },
            _ => {}
        }
    }
}

impl Message {
    /// Stores the field just read and moves to the next one.
    fn next_field(&mut self) {
        self.close_field();
        self.step += 1;
        self.field = layout(self.tag, self.step, &self.ints).unwrap_or(Field::Rest);
    }

    fn close_field(&mut self) {
        match std::mem::replace(&mut self.field, Field::Rest) {
            Field::Name(name) => self.names.push(name),
            Field::Text(digest) => self.text = Some(digest.finish()),
            Field::Int { value, .. } => self.ints.push(value),
            Field::Skip(_) | Field::Rest => {}
        }
    }
}

/// Field `step` of a message of type `tag`, given the integers read before it; `None`
/// past the fields that matter (or for a message that does not matter at all).
fn layout(tag: u8, step: u8, ints: &[u32]) -> Option<Field> {
    let name = || Some(Field::Name(Vec::new()));
    let int = |need| Some(Field::Int { value: 0, need });
    match (tag, step) {
        (b'Q', 0) | (b'P', 1) => Some(Field::Text(TextDigest::new())),
        (b'P', 0) | (b'B', 0 | 1) | (b'E', 0) | (b'C', 1) => name(),
        // Bind: format codes (count, then 2 bytes each), then the parameter count.
        (b'B', 2 | 4) => int(2),
        (b'B', 3) => Some(Field::Skip(
            2 * u64::from(ints.first().copied().unwrap_or(0)),
        )),
        (b'C', 0) => int(1),
        _ => None,
    }
}

#[cfg(test)]
#[path = "statement_audit_tests.rs"]
mod tests;
