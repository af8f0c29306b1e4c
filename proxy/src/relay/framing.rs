//! Message framing seen from the relay, without reading bodies: where upstream messages
//! start ([`BoundaryTracker`]) and whether the client's last message was a Terminate
//! ([`ClientTail`]).

use crate::net::messages::{ReadyForQuery, Terminate};

/// The last five bytes the client sent, to tell a Terminate (`X`, length 4) from a client
/// that vanished, whose query may still be running upstream. Looking at the tail only
/// costs nothing per message; a Terminate is always the last thing a client sends.
#[derive(Default)]
pub(super) struct ClientTail {
    bytes: [u8; 5],
    seen: usize,
}

impl ClientTail {
    pub(super) fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= 5 {
            self.bytes.copy_from_slice(&chunk[chunk.len() - 5..]);
        } else {
            self.bytes.rotate_left(chunk.len());
            self.bytes[5 - chunk.len()..].copy_from_slice(chunk);
        }
        self.seen = self.seen.saturating_add(chunk.len());
    }

    pub(super) fn is_terminate(&self) -> bool {
        self.seen >= 5 && self.bytes == Terminate::WIRE
    }
}

/// Follows backend message framing (1 tag byte, 4 length bytes counting themselves, body)
/// without looking at bodies, to know where messages start.
#[derive(Debug, Default, Clone)]
pub struct BoundaryTracker {
    /// Header bytes of the next message seen so far (0..=5).
    header_len: usize,
    header: [u8; 5],
    /// Body bytes of the current message still to come.
    body_left: u64,
    /// A length below 4 was seen: framing is lost and no boundary is ever reported again.
    lost: bool,
    /// The type of the last message whose header was read.
    last_tag: Option<u8>,
    /// The first body byte of that message, once seen (a ReadyForQuery's transaction
    /// status).
    last_first_byte: Option<u8>,
    /// ReadyForQuery messages begun since the tracker was created.
    ready_count: u64,
}

impl BoundaryTracker {
    /// A tracker whose stream so far ended with a whole message of type `tag` whose body
    /// began with `first_byte`.
    pub fn after(tag: u8, first_byte: Option<u8>) -> Self {
        BoundaryTracker {
            last_tag: Some(tag),
            last_first_byte: first_byte,
            ..BoundaryTracker::default()
        }
    }

    /// The transaction status of the last message when it is a whole ReadyForQuery that
    /// ends the bytes seen so far: `I` idle, `T` in a transaction, `E` in a failed one.
    pub fn ready_status(&self) -> Option<u8> {
        match (self.at_boundary(), self.last_tag) {
            (true, Some(ReadyForQuery::TAG)) => self.last_first_byte,
            _ => None,
        }
    }

    /// The type of the last message whose header was seen (the message may not be whole:
    /// see [`at_boundary`](Self::at_boundary)).
    pub fn last_message(&self) -> Option<u8> {
        self.last_tag
    }

    /// ReadyForQuery messages whose header was seen since the tracker was created.
    pub fn ready_count(&self) -> u64 {
        self.ready_count
    }

    /// Whether the bytes seen so far end exactly at a message boundary.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.header_len == 0 && self.body_left == 0
    }

    /// Consumes `chunk`.
    pub fn advance(&mut self, chunk: &[u8]) {
        let _ = self.consume(chunk, false);
    }

    /// Consumes `chunk` up to the first message boundary after its start and returns that
    /// offset (`Some(0)` when already at one); consumes all of it and returns `None` when
    /// it holds no boundary.
    pub fn first_boundary_in(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.at_boundary() {
            return Some(0);
        }
        self.consume(chunk, true)
    }

    fn consume(&mut self, chunk: &[u8], stop_at_boundary: bool) -> Option<usize> {
        let mut pos = 0;
        while pos < chunk.len() && !self.lost {
            if self.body_left > 0 {
                if self.last_first_byte.is_none() {
                    self.last_first_byte = Some(chunk[pos]);
                }
                let take = self.body_left.min((chunk.len() - pos) as u64);
                self.body_left -= take;
                pos += take as usize;
            } else {
                let take = (5 - self.header_len).min(chunk.len() - pos);
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&chunk[pos..pos + take]);
                self.header_len += take;
                pos += take;
                if self.header_len == 5 {
                    let len = i32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.header_len = 0;
                    self.last_tag = Some(self.header[0]);
                    if self.header[0] == ReadyForQuery::TAG {
                        self.ready_count += 1;
                    }
                    self.last_first_byte = None;
                    match u64::try_from(len) {
                        Ok(len) if len >= 4 => self.body_left = len - 4,
                        _ => self.lost = true,
                    }
                }
            }
            if stop_at_boundary && self.at_boundary() {
                return Some(pos);
            }
        }
        None
    }
}
