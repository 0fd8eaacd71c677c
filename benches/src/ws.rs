//! The client side of the wire, shared by the load generators: a minimal
//! WebSocket client (fixed `Sec-WebSocket-Key`, masked client frames with a
//! fixed mask, a parser for the server's unmasked frames) and free loopback
//! ports for the servers they start.

use std::net::{SocketAddr, TcpListener};

/// The client's fixed `Sec-WebSocket-Key` (the RFC's example nonce).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The client's fixed masking key (RFC 6455 requires masked client frames;
/// it does not let the server check that keys are unpredictable).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A loopback port that was free a moment ago (another process may take it
/// before the server binds it; good enough for benchmarks).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free loopback port")
        .port()
}

/// Where `needle` first occurs in `haystack`. The load generator looks
/// for a field in every delivery it reads, on the cores the server runs
/// on: a `memcmp` at every position was more of its CPU than parsing a
/// NATS message whole.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The HTTP request that upgrades a connection to `addr` to a WebSocket on
/// `/v1/ws`.
pub fn upgrade_request(addr: SocketAddr) -> Vec<u8> {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Appends a masked client frame (FIN set) with `opcode` and `payload`.
pub fn push_ws_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    // Eight bytes at a time: byte by byte, masking was the largest cost of
    // the load generator's publisher, on the cores the server runs on.
    let half = u64::from(u32::from_ne_bytes(MASK));
    let wide = half | half << 32; // MASK twice, in either byte order
    let mut words = out[start..].chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ wide;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= MASK[i & 3];
    }
}

/// The server frame at the start of `b`: (opcode, payload start, frame end),
/// or `None` if it is not complete yet. Server frames are not masked.
pub fn ws_frame(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, mut start): (usize, usize) = match b[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    if b[1] & 0x80 != 0 {
        start += 4; // a masked server frame is a protocol error; skip it whole
    }
    let end = start.checked_add(len)?;
    (b.len() >= end).then_some((opcode, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_frames_round_trip_lengths() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            // A server frame of `len` bytes.
            let mut f = vec![0x81];
            if len < 126 {
                f.push(len as u8);
            } else if len < 65_536 {
                f.push(126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                f.push(127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
            let header = f.len();
            f.extend(std::iter::repeat_n(b'a', len));
            assert_eq!(ws_frame(&f), Some((1, header, header + len)), "len {len}");
            assert_eq!(
                ws_frame(&f[..f.len() - 1]),
                None,
                "len {len}, one byte short"
            );
        }
        // A client frame: masked, and unmasks to the payload.
        let mut c = Vec::new();
        push_ws_frame(&mut c, 1, b"hello");
        assert_eq!(c[0], 0x81);
        assert_eq!(c[1], 0x80 | 5);
        let unmasked: Vec<u8> = c[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ c[2 + (i & 3)])
            .collect();
        assert_eq!(unmasked, b"hello");
        // Masked a word at a time, with a remainder, after other bytes.
        let payload: Vec<u8> = (0..=200u8).collect();
        let mut c = b"xyz".to_vec();
        push_ws_frame(&mut c, 2, &payload);
        let body = &c[3 + 8..];
        let unmasked: Vec<u8> = body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(unmasked, payload);
    }
}
