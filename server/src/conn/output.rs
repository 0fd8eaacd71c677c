//! A connection's unsent bytes: frames shared with other connections
//! (`Bytes`, encoded once per worker) and bytes of its own, written out with
//! vectored writes so shared frames are never copied per connection.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// The own-bytes buffer grows by at least this much: per-delivery headers
/// (a few dozen bytes each) then share one allocation.
const TAIL_BLOCK: usize = 4096;

/// Unsent output, in order: `chunks`, then `tail`.
#[derive(Default)]
pub(crate) struct Output {
    /// Sealed chunks; the first may be partly written (`front_sent`).
    chunks: VecDeque<Bytes>,
    front_sent: usize,
    /// Bytes of the chunks, `front_sent` included.
    chunk_bytes: usize,
    /// This connection's own bytes, appended after every chunk.
    tail: BytesMut,
}

impl Output {
    /// Bytes not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.chunk_bytes - self.front_sent + self.tail.len()
    }

    /// Appends bytes of this connection's own.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len());
        self.tail.extend_from_slice(bytes);
    }

    /// The buffer for bytes of this connection's own (appended last).
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        self.room(64);
        &mut self.tail
    }

    /// Frees the own-bytes buffer if nothing is pending (an idle
    /// connection keeps no block).
    pub(crate) fn release_if_idle(&mut self) {
        if self.pending() == 0 && self.tail.capacity() > 0 {
            self.tail = BytesMut::new();
        }
    }

    fn room(&mut self, n: usize) {
        if self.tail.capacity() - self.tail.len() < n {
            self.tail.reserve(n.max(TAIL_BLOCK));
        }
    }

    /// Appends a frame shared with other connections (no copy).
    pub(crate) fn push_shared(&mut self, frame: Bytes) {
        if !self.tail.is_empty() {
            let own = self.tail.split().freeze();
            self.push_chunk(own);
        }
        self.push_chunk(frame);
    }

    fn push_chunk(&mut self, chunk: Bytes) {
        self.chunk_bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Writes as much as `sink` takes without blocking. `Ok(true)` if some
    /// bytes were written.
    pub(crate) fn write_to(&mut self, sink: &mut impl Write) -> io::Result<bool> {
        let mut wrote = false;
        while self.pending() > 0 {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut used = 0;
                for (i, chunk) in self.chunks.iter().take(MAX_IOVECS - 1).enumerate() {
                    let from = if i == 0 { self.front_sent } else { 0 };
                    slices[used] = IoSlice::new(&chunk[from..]);
                    used += 1;
                }
                // The tail follows the last chunk only.
                if self.chunks.len() == used && !self.tail.is_empty() {
                    slices[used] = IoSlice::new(&self.tail);
                    used += 1;
                }
                match sink.write_vectored(&slices[..used]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            wrote = true;
            self.consume(n);
        }
        Ok(wrote)
    }

    /// Drops `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                self.tail.advance(n);
                return;
            };
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.chunk_bytes -= front.len();
            self.front_sent = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink taking at most `step` bytes per call, recording what it got.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.got.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn own_and_shared_bytes_leave_in_order_through_partial_writes() {
        let mut out = Output::default();
        let mut expected = Vec::new();
        let mut sink = Trickle {
            got: Vec::new(),
            step: 7,
            calls: 0,
        };
        for i in 0..500u32 {
            let own = format!("<{i}>");
            out.extend(own.as_bytes());
            expected.extend_from_slice(own.as_bytes());
            if i % 3 != 0 {
                let shared = Bytes::from(format!("[shared {i}]"));
                expected.extend_from_slice(&shared);
                out.push_shared(shared);
            }
            if i % 50 == 0 {
                let _ = out.write_to(&mut sink).unwrap();
            }
            assert_eq!(out.pending(), expected.len() - sink.got.len());
        }
        while out.pending() > 0 {
            out.write_to(&mut sink).unwrap();
        }
        assert_eq!(sink.got, expected);
    }
}
