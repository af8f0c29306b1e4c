//! [`ClientWatch`]: the client's messages read as they pass, for session reuse (when the
//! target has `session_reuse`) and for the statement audit (`[audit] statements`, handed
//! to a [`StatementTracker`]). With neither, bodies are never looked at.
//!
//! For session reuse:
//! - A Terminate that ends what the client sent is withheld: the upstream session stays
//!   logged in, and may be kept for the next client.
//! - Prepared statements the client created with Parse under a name outlive it upstream.
//!   Redshift cannot drop them in bulk (its DEALLOCATE takes one name: DG r_DEALLOCATE;
//!   `DEALLOCATE ALL` and `DISCARD` came with PostgreSQL 8.3, after the 8.0 Redshift
//!   derives from), so their names are collected and each is closed (protocol Close)
//!   before the session is reused.
//! - SQL `PREPARE` statements cannot be listed that way: a simple query or Parse whose
//!   text contains `prepare` (any case) makes the session one not to keep. Crude, and
//!   safe in the direction that matters: a false match only costs a reuse.

use crate::net::messages::close::Sync;
use crate::net::messages::{Query, Terminate};

/// Longest statement name kept for closing: PostgreSQL's and Redshift's identifiers are
/// at most 63 bytes (NAMEDATALEN 64); a longer one is truncated by the server, so the
/// proxy cannot know what to close.
const MAX_NAME: usize = 63;
/// Most statement names kept for closing; a session with more is not kept.
const MAX_NAMES: usize = 256;

const KEYWORD: &[u8] = b"prepare";

/// Client messages the server answers with exactly one ReadyForQuery: Query, Sync and
/// FunctionCall (`F`, no message type of ours: the proxy never sends one).
const ANSWERED_BY_READY: [u8; 3] = [Query::TAG, Sync::TAG, b'F'];

use super::statement_audit::StatementTracker;

/// See the module documentation.
#[derive(Debug)]
pub struct ClientWatch {
    /// Watch for session reuse (else only for `audit`).
    reuse: bool,
    audit: Option<StatementTracker>,
    header: [u8; 5],
    header_len: usize,
    body_left: u64,
    tag: u8,
    /// The name of the Parse message being read, until its NUL.
    name: Option<Vec<u8>>,
    names: Vec<Vec<u8>>,
    /// Bytes of [`KEYWORD`] matched so far in a query text.
    matched: usize,
    /// Why the session must not be kept, once known.
    refused: Option<&'static str>,
    /// Messages sent that the server answers with a ReadyForQuery ([`ANSWERED_BY_READY`]).
    awaiting_ready: u64,
}

impl Default for ClientWatch {
    /// A watch for session reuse only.
    fn default() -> Self {
        ClientWatch::new(true, None)
    }
}

impl ClientWatch {
    /// A watch for session reuse when `reuse`, and feeding `audit` when given.
    pub fn new(reuse: bool, audit: Option<StatementTracker>) -> Self {
        ClientWatch {
            reuse,
            audit,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            tag: 0,
            name: None,
            names: Vec::new(),
            matched: 0,
            refused: None,
            awaiting_ready: 0,
        }
    }

    /// Reads `chunk`. Returns where a Terminate message begins when it is the last whole
    /// message of the chunk and starts in it: the caller forwards only the bytes before it.
    pub fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut terminate_at = None;
        let mut pos = 0;
        while pos < chunk.len() && self.refused != Some(LOST) {
            if self.body_left > 0 {
                let take = self.body_left.min((chunk.len() - pos) as u64) as usize;
                if self.reuse {
                    self.body(&chunk[pos..pos + take]);
                }
                self.body_left -= take as u64;
                if let Some(audit) = self.audit.as_mut() {
                    audit.body(&chunk[pos..pos + take]);
                    if self.body_left == 0 {
                        audit.end();
                    }
                }
                pos += take;
                continue;
            }
            let start = pos;
            let take = (5 - self.header_len).min(chunk.len() - pos);
            self.header[self.header_len..self.header_len + take]
                .copy_from_slice(&chunk[pos..pos + take]);
            self.header_len += take;
            pos += take;
            if self.header_len < 5 {
                continue;
            }
            self.header_len = 0;
            let [tag, len @ ..] = self.header;
            let len = i32::from_be_bytes(len);
            if terminate_at.take().is_some() {
                // Something after a Terminate: a client that does not mean to leave.
                self.refuse("protocol");
            }
            self.tag = tag;
            if ANSWERED_BY_READY.contains(&tag) {
                self.awaiting_ready += 1;
            }
            self.body_left = match u64::try_from(len) {
                Ok(len) if len >= 4 => len - 4,
                _ => {
                    self.refuse(LOST);
                    return None;
                }
            };
            self.matched = 0;
            self.name = (tag == b'P' && self.reuse).then(Vec::new);
            if let Some(audit) = self.audit.as_mut() {
                audit.begin(tag);
                if self.body_left == 0 {
                    audit.end();
                }
            }
            if tag == Terminate::TAG && len == 4 && take == 5 {
                terminate_at = Some(start);
            }
        }
        match terminate_at {
            _ if !self.reuse => None,
            Some(at) if at + 5 == chunk.len() => Some(at),
            Some(_) => {
                self.refuse("protocol");
                None
            }
            None => None,
        }
    }

    /// How many ReadyForQuery messages what the client sent calls for: when the upstream
    /// has sent fewer, a query the client pipelined is still running.
    pub fn awaiting_ready(&self) -> u64 {
        self.awaiting_ready
    }

    /// Why the session must not be kept, if anything the client sent says so.
    pub fn refused(&self) -> Option<&'static str> {
        self.refused
    }

    /// Names of the statements the client prepared with Parse (each once).
    pub fn into_statements(self) -> Vec<Vec<u8>> {
        self.names
    }

    fn refuse(&mut self, why: &'static str) {
        if self.refused.is_none() || why == LOST {
            self.refused = Some(why);
        }
    }

    fn body(&mut self, bytes: &[u8]) {
        let mut text = bytes;
        if let Some(name) = self.name.as_mut() {
            match bytes.iter().position(|&b| b == 0) {
                None => {
                    name.extend_from_slice(bytes);
                    text = &[];
                }
                Some(end) => {
                    name.extend_from_slice(&bytes[..end]);
                    text = &bytes[end + 1..];
                    if let Some(name) = self.name.take() {
                        self.named(name);
                    }
                }
            }
            if self.name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
                self.name = None;
                self.refuse("prepared_statements");
            }
        }
        if matches!(self.tag, b'Q' | b'P') && self.matched < KEYWORD.len() {
            for &b in text {
                self.matched = next_match(self.matched, b);
                if self.matched == KEYWORD.len() {
                    self.refuse("prepared_statements");
                    break;
                }
            }
        }
    }

    fn named(&mut self, name: Vec<u8>) {
        if name.is_empty() || self.names.contains(&name) {
            return;
        }
        if name.len() > MAX_NAME || self.names.len() == MAX_NAMES {
            self.refuse("prepared_statements");
            return;
        }
        self.names.push(name);
    }
}

/// Framing was lost (a length below 4): nothing can be known any more.
const LOST: &str = "protocol";

/// Knuth-Morris-Pratt step for [`KEYWORD`], ASCII case-insensitive: how much of it is
/// matched after `b`, given `matched` before.
fn next_match(mut matched: usize, b: u8) -> usize {
    // Longest proper prefix of KEYWORD[..i] that is also its suffix ("prep" → "p").
    const FALLBACK: [usize; 7] = [0, 0, 0, 0, 1, 0, 0];
    let b = b.to_ascii_lowercase();
    loop {
        if KEYWORD[matched] == b {
            return matched + 1;
        }
        if matched == 0 {
            return 0;
        }
        matched = FALLBACK[matched];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::net::framing::message as msg;

    const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

    #[test]
    fn a_final_terminate_is_found_whole_in_its_chunk() {
        let mut w = ClientWatch::default();
        let query = msg(b'Q', b"select 1\0");
        assert_eq!(w.scan(&query), None);
        assert_eq!(w.scan(&TERMINATE), Some(0));
        let mut w = ClientWatch::default();
        let both = [query.clone(), TERMINATE.to_vec()].concat();
        assert_eq!(w.scan(&both), Some(query.len()));
        assert_eq!(w.refused(), None);
        // Split across chunks it cannot be withheld.
        let mut w = ClientWatch::default();
        assert_eq!(w.scan(&TERMINATE[..2]), None);
        assert_eq!(w.scan(&TERMINATE[2..]), None);
        // Anything after it: not a goodbye.
        for after in [&query[..], &query[..2]] {
            let mut w = ClientWatch::default();
            assert_eq!(w.scan(&[&TERMINATE[..], after].concat()), None);
            assert_eq!(w.refused(), Some("protocol"));
        }
    }

    #[test]
    fn every_query_sync_and_function_call_awaits_one_ready_for_query() {
        let wire = [
            msg(b'Q', b"select 1\0"),
            msg(b'P', b"\0select 2\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
            msg(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
            msg(b'Q', b"select 3\0"),
        ]
        .concat();
        for split in 0..wire.len() {
            let mut w = ClientWatch::new(false, None);
            w.scan(&wire[..split]);
            w.scan(&wire[split..]);
            assert_eq!(w.awaiting_ready(), 4, "split {split}");
        }
    }

    /// The reuse decision compares this with the ReadyForQuery messages seen upstream: a
    /// pipelined second query still running is not mistaken for an idle session.
    #[test]
    fn ready_for_query_messages_are_counted_upstream_across_any_split() {
        let ready = msg(b'Z', b"I");
        let wire = [
            msg(b'T', b"\0\0"),
            ready.clone(),
            msg(b'C', b"SELECT 1\0"),
            ready,
        ]
        .concat();
        for split in 0..wire.len() {
            let mut t = super::super::framing::BoundaryTracker::default();
            t.advance(&wire[..split]);
            t.advance(&wire[split..]);
            assert_eq!(t.ready_count(), 2, "split {split}");
        }
    }

    #[test]
    fn parse_names_are_collected_across_any_split() {
        let wire = [
            msg(b'P', b"S_1\0select $1\0\0\0"),
            msg(b'B', b"\0S_1\0\0\0\0\0\0\0"),
            msg(b'P', b"\0select 2\0\0\0"),
            msg(b'P', b"S_2\0select 3\0\0\0"),
            msg(b'P', b"S_1\0select $1\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        for split in 0..wire.len() {
            let mut w = ClientWatch::default();
            w.scan(&wire[..split]);
            w.scan(&wire[split..]);
            assert_eq!(w.refused(), None, "split {split}");
            assert_eq!(w.into_statements(), [b"S_1".to_vec(), b"S_2".to_vec()]);
        }
    }

    #[test]
    fn sql_prepare_in_any_case_refuses_reuse() {
        for text in [
            &b"PREPARE q AS select 1\0"[..],
            b"select 1; prePREPARE x\0",
            b"/* prepare */ select 1\0",
        ] {
            let wire = msg(b'Q', text);
            for split in 0..wire.len() {
                let mut w = ClientWatch::default();
                w.scan(&wire[..split]);
                w.scan(&wire[split..]);
                assert_eq!(w.refused(), Some("prepared_statements"), "{text:?} {split}");
            }
        }
        let mut w = ClientWatch::default();
        w.scan(&msg(b'Q', b"select 'prepar', 'e'\0"));
        w.scan(&msg(b'd', b"prepare"));
        assert_eq!(
            w.refused(),
            None,
            "no match across messages or in COPY data"
        );
    }

    #[test]
    fn too_long_or_too_many_names_refuse_reuse() {
        let long = [vec![b'n'; 64], b"\0select 1\0\0\0".to_vec()].concat();
        let mut w = ClientWatch::default();
        w.scan(&msg(b'P', &long));
        assert_eq!(w.refused(), Some("prepared_statements"));
        let mut w = ClientWatch::default();
        for i in 0..=MAX_NAMES {
            w.scan(&msg(b'P', format!("s{i}\0select 1\0\0\0").as_bytes()));
        }
        assert_eq!(w.refused(), Some("prepared_statements"));
    }

    #[test]
    fn lost_framing_is_final() {
        let mut w = ClientWatch::default();
        assert_eq!(w.scan(b"Q\0\0\0\x02"), None);
        assert_eq!(w.scan(&TERMINATE), None);
        assert_eq!(w.refused(), Some(LOST));
    }
}
