//! [`ReadBuffered`]: a read buffer below TLS.
//!
//! rustls pulls TLS records out of its transport at most 4 KiB per `read` (its deframer
//! buffer grows in 4 KiB steps and shrinks back whenever it is empty), so a full 16 KiB
//! record costs four or five `recvfrom` calls on a plain socket. Placed between the socket
//! and the TLS stream, this buffer turns them into one `recvfrom` per [`READ_BUFFER`]
//! bytes that have arrived; rustls's small reads are then served from memory.
//!
//! Reads go straight to the socket until one of them fills the reader's whole request,
//! which means more data was waiting: only then is the buffer allocated, and kept. A
//! session of small queries and answers never gets one, so idle sessions cost no more
//! than without (64 KiB buffers would add about 16 KiB of resident memory per session:
//! the allocator writes chunk headers at both ends). Writes pass straight through.
//!
//! Only wrap a socket once nothing unencrypted is left to read on it: everything read
//! ahead goes to the TLS layer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once: room for several full TLS records (16 KiB of
/// plaintext plus up to 256 bytes of overhead each).
pub const READ_BUFFER: usize = 64 * 1024;

/// A transport with a read buffer; see the module documentation.
#[derive(Debug)]
pub struct ReadBuffered<S> {
    inner: S,
    /// Empty until a read shows that data arrives faster than the reader asks for it.
    buf: Box<[u8]>,
    capacity: usize,
    /// `buf[pos..filled]` has been read from `inner` and not yet handed out.
    pos: usize,
    filled: usize,
}

impl<S> ReadBuffered<S> {
    /// Wraps `inner` with a [`READ_BUFFER`]-byte read buffer.
    pub fn new(inner: S) -> Self {
        Self::with_capacity(READ_BUFFER, inner)
    }

    /// Wraps `inner` with a read buffer of `capacity` bytes (at least 1).
    pub fn with_capacity(capacity: usize, inner: S) -> Self {
        ReadBuffered {
            inner,
            buf: Box::default(),
            capacity: capacity.max(1),
            pos: 0,
            filled: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Bytes read from the transport and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.filled - self.pos
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadBuffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            if this.buf.is_empty() {
                let wanted = out.remaining();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if wanted > 0 && out.remaining() == 0 && this.capacity > wanted {
                    this.buf = vec![0u8; this.capacity].into_boxed_slice();
                }
                return Poll::Ready(Ok(()));
            }
            // A reader that asks for at least a buffer's worth gains nothing from a copy.
            if out.remaining() >= this.capacity {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            this.pos = 0;
            this.filled = fill.filled().len();
            if this.filled == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = out.remaining().min(this.filled - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.filled {
            this.pos = 0;
            this.filled = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadBuffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // rustls hands over all queued records at once; keep that a single `writev`.
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the transport.
    struct Counting<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_transport_read() {
        let data = pattern(60 * 1024);
        let mut reader = ReadBuffered::new(Counting {
            inner: &data[..],
            reads: 0,
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        // The first read filled the request (so more was waiting), the second took all the
        // rest into the buffer, the third saw the end of stream.
        assert_eq!(reader.get_ref().reads, 3);
    }

    #[tokio::test]
    async fn small_messages_never_allocate_the_buffer() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut near = ReadBuffered::new(near);
        let mut chunk = [0u8; 4096];
        for _ in 0..100 {
            far.write_all(&[7u8; 300]).await.unwrap();
            let n = near.read(&mut chunk).await.unwrap();
            assert_eq!(n, 300);
            assert!(near.buf.is_empty());
        }
        // A read that fills the request shows bulk data: from then on, buffered.
        far.write_all(&[8u8; 10_000]).await.unwrap();
        near.read_exact(&mut chunk).await.unwrap();
        assert_eq!(near.buf.len(), READ_BUFFER);
        near.read_exact(&mut chunk).await.unwrap();
        assert_eq!(near.buffered(), 10_000 - 2 * 4096);
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_whatever_the_read_and_buffer_sizes() {
        let data = pattern(100_003);
        for capacity in [1, 7, 4096, 16 * 1024, READ_BUFFER] {
            for read_size in [1, 5, 4096, 16 * 1024 + 1, 200_000] {
                let mut reader = ReadBuffered::with_capacity(capacity, &data[..]);
                let mut got = Vec::new();
                let mut chunk = vec![0u8; read_size];
                loop {
                    let n = reader.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                assert!(got == data, "capacity {capacity}, reads of {read_size}");
                assert_eq!(reader.buffered(), 0);
            }
        }
    }

    #[tokio::test]
    async fn writes_pass_through_and_reads_see_what_arrives_later() {
        let (near, far) = tokio::io::duplex(1 << 20);
        let mut near = ReadBuffered::with_capacity(1024, near);
        let (mut far_rd, mut far_wr) = tokio::io::split(far);

        near.write_all(b"hello").await.unwrap();
        near.flush().await.unwrap();
        let mut five = [0u8; 5];
        far_rd.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"hello");

        far_wr.write_all(b"first").await.unwrap();
        let mut two = [0u8; 2];
        near.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"fi");
        let mut one = [0u8; 1];
        near.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"r");
        assert_eq!(near.buffered(), 2);
        far_wr.write_all(b" second").await.unwrap();
        far_wr.shutdown().await.unwrap();
        let mut rest = Vec::new();
        near.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"st second");
        near.shutdown().await.unwrap();
    }
}
