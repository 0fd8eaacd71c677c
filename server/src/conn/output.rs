//! A connection's unsent bytes: frames shared with other connections
//! (`Bytes`, encoded once per worker) and bytes of its own, written out with
//! vectored writes so shared frames are never copied per connection.
//!
//! A connection's own bytes go into blocks of 16 KiB (4 KiB when it has
//! nothing pending and the pool is empty): when a delivery does not fit,
//! the block is sealed into the chunk queue and the next one started, so a
//! delivery is not copied again once appended (a buffer grown in place is
//! copied whole, its written front too, at every doubling, and each
//! doubling faults fresh pages in; what is written straight into
//! [`Output::tail`], such as a response, may still grow it). Written-out
//! 16 KiB blocks return to their worker's pool (one per thread) rather
//! than to the allocator, which would hand the memory of a drained burst
//! back to the kernel and fault it in again at the next one.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// A block of a connection's own bytes.
const BLOCK: usize = 16 * 1024;
/// A connection's first block when the pool has none: enough for a few
/// deliveries, so that many connections sent an event now and then (or
/// just subscribed) hold no more until their blocks are released.
const FIRST_BLOCK: usize = 4096;

thread_local! {
    /// This worker's written-out blocks.
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { free: Vec::new(), low: 0 }) };
}

/// Free blocks, and the fewest there were since the last [`trim_pool`].
struct Pool {
    free: Vec<BytesMut>,
    low: usize,
}

fn take_block() -> Option<BytesMut> {
    POOL.with_borrow_mut(|pool| {
        let block = pool.free.pop();
        pool.low = pool.low.min(pool.free.len());
        block
    })
}

/// Returns `block`'s allocation to the pool, from its start, if it is no
/// other handle's and exactly a block; any other (a first block, a long
/// response, another connection's frame) is freed.
fn give_block(mut block: BytesMut) {
    block.clear();
    // The whole allocation (a copy, of nothing, if it is shared).
    let whole = Vec::from(block);
    if whole.capacity() == BLOCK {
        // Back to a `BytesMut` without a copy (it is the only handle).
        let block = BytesMut::from(Bytes::from(whole));
        POOL.with_borrow_mut(|pool| pool.free.push(block));
    }
}

/// Frees the blocks the pool kept that were not taken since the last call
/// (blocks given back since then are counted from this call on): called
/// on the worker's timer tick, after its connections gave back their idle
/// blocks, it keeps what a tick's bursts take, and frees an idle worker's
/// blocks at the next tick.
pub(crate) fn trim_pool() {
    POOL.with_borrow_mut(|pool| {
        let unused = pool.low;
        pool.free.drain(..unused);
        pool.low = pool.free.len();
    });
}

/// Unsent output, in order: `chunks`, then `tail`.
#[derive(Default)]
pub(crate) struct Output {
    /// Sealed chunks; the first may be partly written (`front_sent`).
    chunks: VecDeque<Bytes>,
    front_sent: usize,
    /// Bytes of the chunks, `front_sent` included.
    chunk_bytes: usize,
    /// This connection's own bytes, appended after every chunk: the block
    /// being filled.
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

    /// Returns the own-bytes block to the pool if nothing is pending: an
    /// idle connection holds no block (a busy one that happens to have
    /// drained takes one from the pool again).
    pub(crate) fn release_if_idle(&mut self) {
        if self.pending() == 0 && self.tail.capacity() > 0 {
            give_block(std::mem::take(&mut self.tail));
        }
    }

    fn room(&mut self, n: usize) {
        if self.tail.capacity() - self.tail.len() >= n {
            return;
        }
        if !self.tail.is_empty() {
            let full = self.tail.split().freeze();
            self.push_chunk(full);
        } else if self.tail.try_reclaim(n) {
            return; // written out: reused from its start
        }
        self.tail = take_block().unwrap_or_default();
        let block = if self.pending() == 0 {
            FIRST_BLOCK
        } else {
            BLOCK
        };
        self.tail.reserve(n.max(block));
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
            if let Some(Ok(block)) = self.chunks.pop_front().map(Bytes::try_into_mut) {
                give_block(block);
            }
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
        // Own bytes of about 100 each, so they span several blocks.
        for i in 0..500u32 {
            let own = format!("<{i}>").repeat(20);
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

    fn pooled() -> usize {
        POOL.with_borrow(|pool| pool.free.len())
    }

    fn pooled_blocks() -> Vec<*const u8> {
        POOL.with_borrow(|pool| pool.free.iter().map(|b| b.as_ptr()).collect())
    }

    /// Appends `n` deliveries of 300 bytes and writes them all out.
    fn burst(out: &mut Output, n: usize) {
        for i in 0..n {
            out.extend(&[i as u8; 300]);
        }
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        assert_eq!(sink.len(), 300 * n);
        assert!(sink
            .chunks(300)
            .enumerate()
            .all(|(i, d)| d == [i as u8; 300]));
    }

    #[test]
    fn written_out_blocks_serve_the_next_burst_and_an_unused_pool_is_freed() {
        // The pool is this thread's: the test's own.
        let mut out = Output::default();
        burst(&mut out, 200); // 60 000 bytes: 4 KiB, then 16 KiB blocks
        let first = pooled_blocks();
        assert!(first.len() >= 3, "{} blocks pooled", first.len());
        trim_pool();
        // The next burst takes every one of them back (the pool ran dry)
        // and they return once written.
        burst(&mut out, 200);
        assert_eq!(POOL.with_borrow(|pool| pool.low), 0);
        let second = pooled_blocks();
        assert!(first.iter().all(|b| second.contains(b)));
        // Taken in the last tick: none is freed at this one ...
        trim_pool();
        assert_eq!(pooled(), second.len());
        // ... but a tick later, unused since, all are.
        trim_pool();
        assert_eq!(pooled(), 0);
    }

    #[test]
    fn an_idle_connection_returns_its_block_to_the_pool() {
        let mut out = Output::default();
        // Its block is now a whole one, written out.
        burst(&mut out, 100);
        let before = pooled();
        out.release_if_idle();
        assert_eq!(out.tail.capacity(), 0);
        assert_eq!(pooled(), before + 1);
        // The next delivery takes it back.
        out.extend(b"hello");
        assert_eq!(pooled(), before);
    }

    #[test]
    fn only_whole_blocks_of_no_other_handle_are_pooled() {
        let before = pooled();
        give_block(BytesMut::with_capacity(FIRST_BLOCK));
        give_block(BytesMut::with_capacity(4 * BLOCK));
        // A block's second half, split off: its allocation is a block, but
        // the front half still holds it.
        let mut block = BytesMut::with_capacity(BLOCK);
        block.extend_from_slice(&[1; BLOCK / 2]);
        let front = block.split().freeze();
        give_block(block);
        // The rest of a larger allocation, a block's room left after a split.
        let mut large = BytesMut::with_capacity(4 * BLOCK);
        large.extend_from_slice(&[2; 3 * BLOCK - 1000]);
        let _large_front = large.split().freeze();
        give_block(large);
        assert_eq!(pooled(), before);
        // Once the front half is gone, the whole block comes back.
        let Ok(front) = front.try_into_mut() else {
            panic!("the front half is the last handle");
        };
        give_block(front);
        assert_eq!(pooled(), before + 1);
        let block = take_block().unwrap();
        assert_eq!(block.capacity(), BLOCK);
        assert!(block.is_empty());
    }
}
