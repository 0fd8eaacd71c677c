//! The JSON toolkit: string escaping, validation and compaction, without a
//! JSON dependency (core keeps its dependencies few), shared by the broker,
//! the server and the C ABI so that every layer escapes and checks JSON
//! alike.

use std::fmt;

/// The deepest nesting of arrays and objects [`validate`] accepts.
pub const MAX_DEPTH: usize = 64;

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Escapes `"` and `\`, writes `\n \r \t \b \f` for those control
/// characters and `\u00XX` for the other C0 controls and DEL, and escapes
/// U+2028 and U+2029 (valid JSON, but line terminators in JavaScript). Every
/// other character is copied as UTF-8.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_string_with(s, |b| out.extend_from_slice(b));
}

/// [`write_string`] into any byte sink (the server's `BytesMut`, say): `put`
/// receives the literal in consecutive pieces.
pub fn write_string_with(s: &str, mut put: impl FnMut(&[u8])) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Per byte: 0 copied as is, 1 escaped, 2 may start U+2028 or U+2029
    // (E2 80 A8/A9). A table lookup per byte and one copy per run of plain
    // bytes: this escapes every event's topic and type on the fan-out path.
    const CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut i = 0;
        while i < 0x20 {
            t[i] = 1;
            i += 1;
        }
        t[b'"' as usize] = 1;
        t[b'\\' as usize] = 1;
        t[0x7f] = 1;
        t[0xe2] = 2;
        t
    };
    let bytes = s.as_bytes();
    put(b"\"");
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match CLASS[usize::from(b)] {
            0 => {
                i += 1;
                continue;
            }
            2 => {
                if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9))
                {
                    put(&bytes[start..i]);
                    put(if bytes[i + 2] == 0xa8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 3;
                    start = i;
                } else {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        put(&bytes[start..i]);
        match b {
            b'"' => put(b"\\\""),
            b'\\' => put(b"\\\\"),
            b'\n' => put(b"\\n"),
            b'\r' => put(b"\\r"),
            b'\t' => put(b"\\t"),
            0x08 => put(b"\\b"),
            0x0c => put(b"\\f"),
            _ => put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    put(&bytes[start..]);
    put(b"\"");
}

/// Why a text is not valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for JsonError {}

/// Checks that `s` is one valid JSON value (RFC 8259, surrounding whitespace
/// allowed), nested at most [`MAX_DEPTH`] deep, with no unpaired
/// surrogate escape.
pub fn validate(s: &str) -> Result<(), JsonError> {
    let mut p = JsonParser {
        b: s.as_bytes(),
        i: 0,
        out: None,
    };
    p.document()
}

/// Checks the JSON value at the very start of `s` like [`validate`] and
/// returns its length in bytes: a decoder splitting a larger document
/// validates a field's value and finds its end in one pass.
pub fn value_len(s: &str) -> Result<usize, JsonError> {
    let mut p = JsonParser {
        b: s.as_bytes(),
        i: 0,
        out: None,
    };
    p.value(0)?;
    Ok(p.i)
}

/// Validates `s` like [`validate`] and returns it without insignificant
/// whitespace.
pub fn compact(s: &str) -> Result<String, JsonError> {
    let mut out = Vec::with_capacity(s.len());
    write_compact(&mut out, s)?;
    // The output is the input minus ASCII whitespace outside strings: UTF-8.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// Validates `s` like [`validate`] and appends it to `out` without
/// insignificant whitespace. On error `out` is left as it was.
pub fn write_compact(out: &mut Vec<u8>, s: &str) -> Result<(), JsonError> {
    let start = out.len();
    let mut p = JsonParser {
        b: s.as_bytes(),
        i: 0,
        out: Some(&mut *out),
    };
    let result = p.document();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The first index at or after `i` of a byte that a JSON string cannot
/// hold as it is (`"`, `\\` or a control character), or `b.len()`. Most of
/// a payload is string content: eight bytes are tested at a time, with the
/// word tricks for "has a zero byte" and "has a byte below n" (for n up to
/// 0x80). Bytes above a qualifying one may be flagged falsely (a borrow
/// runs upward), but the lowest flag is always a qualifying byte, so the
/// word's lowest flag is the answer.
pub fn plain_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(word);
        let quote = x ^ QUOTES;
        let backslash = x ^ BACKSLASHES;
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let flags = special & HIGH;
        if flags != 0 {
            // Little-endian: the lowest flag is the first byte in order.
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the compacted text goes, if anywhere.
    out: Option<&'a mut Vec<u8>>,
}

impl JsonParser<'_> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Copies input bytes `from..self.i` to the output.
    fn emit(&mut self, from: usize) {
        if let Some(o) = self.out.as_mut() {
            o.extend_from_slice(&self.b[from..self.i]);
        }
    }

    fn document(&mut self) -> Result<(), JsonError> {
        self.ws();
        self.value(0)?;
        self.ws();
        if self.i != self.b.len() {
            return Err(self.err("trailing characters"));
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(lit) {
            let from = self.i;
            self.i += lit.len();
            self.emit(from);
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn container(&mut self, depth: usize, close: u8, object: bool) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let from = self.i;
        self.i += 1;
        self.emit(from);
        self.ws();
        if self.peek() == Some(close) {
            let from = self.i;
            self.i += 1;
            self.emit(from);
            return Ok(());
        }
        loop {
            if object {
                if self.peek() != Some(b'"') {
                    return Err(self.err("expected a string key"));
                }
                self.string()?;
                self.ws();
                if self.peek() != Some(b':') {
                    return Err(self.err("expected ':'"));
                }
                let from = self.i;
                self.i += 1;
                self.emit(from);
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    let from = self.i;
                    self.i += 1;
                    self.emit(from);
                    self.ws();
                }
                Some(c) if c == close => {
                    let from = self.i;
                    self.i += 1;
                    self.emit(from);
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or a closing bracket")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut v = 0u16;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("bad \\u escape")),
            };
            v = v << 4 | u16::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<(), JsonError> {
        let from = self.i;
        self.i += 1;
        loop {
            self.i = plain_end(self.b, self.i);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    self.emit(from);
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            let u = self.hex4()?;
                            if (0xDC00..0xE000).contains(&u) {
                                return Err(self.err("unpaired low surrogate"));
                            }
                            if (0xD800..0xDC00).contains(&u) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return Err(self.err("unpaired high surrogate"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("unpaired high surrogate"));
                                }
                            }
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                // `plain_end` stops only at a quote, a backslash or this.
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - from
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let from = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("bad number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("bad number fraction"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("bad number exponent"));
            }
        }
        self.emit(from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::plain_end;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The word-at-a-time scan stops where a byte-by-byte scan does.
        #[test]
        fn plain_end_finds_the_first_special_byte(
            b in prop::collection::vec(prop::sample::select(vec![
                b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xe2, 0xff,
            ]), 0..40),
            start in 0usize..40,
        ) {
            let start = start.min(b.len());
            let naive = (start..b.len())
                .find(|&i| b[i] == b'"' || b[i] == b'\\' || b[i] < 0x20)
                .unwrap_or(b.len());
            prop_assert_eq!(plain_end(&b, start), naive);
        }
    }
}
