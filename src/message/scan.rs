//! A small JSON syntax checker and top-level object walker.
//!
//! It exists because serde's tagged enums need an allocator: the envelope is read here (keys in
//! any order, the body as a byte range), then the body is decoded by name with `serde-json-core`.
//! It is iterative (nesting is tracked in a 64-bit stack), never allocates, and reports the byte
//! offset of the first error.

use crate::error::DecodeError;

/// Deepest nesting of arrays and objects accepted inside one value of the envelope (the envelope
/// object itself not counted; a `body` object is level 1). Deeper is `invalid_json` (errors.md).
pub const MAX_DEPTH: u32 = 64;

/// A member of the top-level object: the raw key (between the quotes, escapes not decoded) and
/// the value's byte range in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// Raw key bytes.
    pub key: &'a [u8],
    /// Start of the value (inclusive).
    pub start: usize,
    /// End of the value (exclusive).
    pub end: usize,
}

fn err(offset: usize) -> DecodeError {
    DecodeError::InvalidJson {
        offset: u32::try_from(offset).unwrap_or(u32::MAX),
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = s.get(i) {
        i += 1;
    }
    i
}

/// Index just past the string starting at `i` (which must be `"`).
fn string_end(s: &[u8], i: usize) -> Result<usize, DecodeError> {
    let mut j = i + 1;
    loop {
        match s.get(j) {
            None => return Err(err(j)),
            Some(b'"') => return Ok(j + 1),
            Some(b'\\') => j = escape_end(s, j)?,
            Some(c) if *c < 0x20 => return Err(err(j)),
            Some(_) => j += 1,
        }
    }
}

fn escape_end(s: &[u8], j: usize) -> Result<usize, DecodeError> {
    match s.get(j + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(j + 2),
        Some(b'u') => match hex4(s, j + 2).ok_or(err(j))? {
            // envelope.md: a surrogate is never escaped, alone or in a pair (a character outside
            // the BMP is sent as UTF-8), so every `\u` escape decodes to one scalar value.
            0xD800..=0xDFFF => Err(err(j)),
            _ => Ok(j + 6),
        },
        _ => Err(err(j)),
    }
}

/// The value of the four hex digits at `i`, if there are four.
fn hex4(s: &[u8], i: usize) -> Option<u16> {
    let hex = s.get(i..i + 4)?;
    hex.iter().try_fold(0u16, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u16::from(d))
    })
}

fn digits_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Index just past the number starting at `i` (RFC 8259 grammar).
fn number_end(s: &[u8], i: usize) -> Result<usize, DecodeError> {
    let mut j = i;
    if s.get(j) == Some(&b'-') {
        j += 1;
    }
    match s.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => j = digits_end(s, j),
        _ => return Err(err(j)),
    }
    if s.get(j) == Some(&b'.') {
        let k = digits_end(s, j + 1);
        if k == j + 1 {
            return Err(err(k));
        }
        j = k;
    }
    if let Some(b'e' | b'E') = s.get(j) {
        j += 1;
        if let Some(b'+' | b'-') = s.get(j) {
            j += 1;
        }
        let k = digits_end(s, j);
        if k == j {
            return Err(err(k));
        }
        j = k;
    }
    Ok(j)
}

fn literal_end(s: &[u8], i: usize, lit: &[u8]) -> Result<usize, DecodeError> {
    if s.get(i..i + lit.len()) == Some(lit) {
        Ok(i + lit.len())
    } else {
        Err(err(i))
    }
}

/// Index just past the scalar (string, number, literal) at `i`.
fn scalar_end(s: &[u8], i: usize) -> Result<usize, DecodeError> {
    match s.get(i) {
        Some(b'"') => string_end(s, i),
        Some(b'-' | b'0'..=b'9') => number_end(s, i),
        Some(b't') => literal_end(s, i, b"true"),
        Some(b'f') => literal_end(s, i, b"false"),
        Some(b'n') => literal_end(s, i, b"null"),
        _ => Err(err(i)),
    }
}

/// Nesting state: bit `d` of `kinds` is 1 when level `d` is an object.
struct Stack {
    kinds: u64,
    depth: u32,
}

impl Stack {
    fn push(&mut self, object: bool, at: usize) -> Result<(), DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(at));
        }
        if object {
            self.kinds |= 1 << self.depth;
        } else {
            self.kinds &= !(1 << self.depth);
        }
        self.depth += 1;
        Ok(())
    }

    fn top_is_object(&self) -> bool {
        self.depth > 0 && self.kinds & (1 << (self.depth - 1)) != 0
    }
}

/// Index just past the JSON value starting at `i` (after whitespace), checking its syntax fully.
pub fn value_end(s: &[u8], i: usize) -> Result<usize, DecodeError> {
    let mut st = Stack { kinds: 0, depth: 0 };
    let mut i = skip_ws(s, i);
    loop {
        // A value is expected at `i`.
        match s.get(i) {
            Some(&c @ (b'{' | b'[')) => {
                let object = c == b'{';
                st.push(object, i)?;
                let j = skip_ws(s, i + 1);
                let close = if object { b'}' } else { b']' };
                if s.get(j) != Some(&close) {
                    i = if object { key_then_colon(s, j)? } else { j };
                    continue;
                }
                st.depth -= 1;
                i = j + 1;
            }
            _ => i = scalar_end(s, i)?,
        }
        i = after_value(s, i, &mut st)?;
        if st.depth == 0 {
            return Ok(i);
        }
    }
}

/// After a value: closes finished containers; returns where the next value starts, or the end of
/// the outermost value once the stack is empty.
fn after_value(s: &[u8], mut i: usize, st: &mut Stack) -> Result<usize, DecodeError> {
    while st.depth > 0 {
        i = skip_ws(s, i);
        let object = st.top_is_object();
        match s.get(i) {
            Some(b',') => {
                let j = skip_ws(s, i + 1);
                return if object { key_then_colon(s, j) } else { Ok(j) };
            }
            Some(b'}') if object => {
                st.depth -= 1;
                i += 1;
            }
            Some(b']') if !object => {
                st.depth -= 1;
                i += 1;
            }
            _ => return Err(err(i)),
        }
    }
    Ok(i)
}

/// Parses `"key" :` at `j` (after whitespace) and returns the index of the value after it.
fn key_then_colon(s: &[u8], j: usize) -> Result<usize, DecodeError> {
    if s.get(j) != Some(&b'"') {
        return Err(err(j));
    }
    let k = skip_ws(s, string_end(s, j)?);
    if s.get(k) != Some(&b':') {
        return Err(err(k));
    }
    Ok(skip_ws(s, k + 1))
}

/// Index just past the value at `i`, found by bracket matching without checking the grammar.
///
/// Strings (with escapes) are skipped whole, so brackets inside them do not count. Used for the
/// envelope's `body`, which the body decoder parses fully anyway; errors found there are then
/// located precisely by [`value_end`].
pub fn skip_value(s: &[u8], i: usize) -> Result<usize, DecodeError> {
    let mut depth = 0u32;
    let mut j = skip_ws(s, i);
    loop {
        match s.get(j) {
            None => return Err(err(j)),
            Some(b'"') => j = string_end(s, j)?,
            Some(b'{' | b'[') => {
                depth += 1;
                j += 1;
            }
            Some(b'}' | b']') => {
                depth = depth.checked_sub(1).ok_or(err(j))?;
                j += 1;
            }
            Some(b',' | b':' | b' ' | b'\t' | b'\n' | b'\r') if depth > 0 => j += 1,
            Some(_) if depth > 0 => j += 1,
            Some(_) => return scalar_end(s, j),
        }
        if depth == 0 {
            return Ok(j);
        }
    }
}

/// Checks that `s` is exactly one JSON object (whitespace around it allowed) and calls `visit`
/// for each top-level member in order, in one pass. Every value is checked against the JSON
/// grammar except the value of the member named `lazy` (raw key), if any, which is only
/// delimited ([`skip_value`]). Stops at the first error.
pub fn walk_object<'a, F>(s: &'a [u8], lazy: Option<&[u8]>, mut visit: F) -> Result<(), DecodeError>
where
    F: FnMut(Member<'a>) -> Result<(), DecodeError>,
{
    let mut i = skip_ws(s, 0);
    match s.get(i) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            value_end(s, i)?;
            return Err(DecodeError::InvalidEnvelope {
                key: "payload",
                problem: crate::error::EnvelopeProblem::Invalid,
            });
        }
        _ => return Err(err(i)),
    }
    i = skip_ws(s, i + 1);
    if s.get(i) == Some(&b'}') {
        return trailing(s, i + 1);
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return Err(err(i));
        }
        let key_end = string_end(s, i)?;
        let key = &s[i + 1..key_end - 1];
        let start = key_then_colon(s, i)?;
        let end = if lazy == Some(key) {
            skip_value(s, start)?
        } else {
            value_end(s, start)?
        };
        visit(Member { key, start, end })?;
        i = skip_ws(s, end);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b'}') => return trailing(s, i + 1),
            _ => return Err(err(i)),
        }
    }
}

/// Only whitespace may follow the object.
fn trailing(s: &[u8], i: usize) -> Result<(), DecodeError> {
    let j = skip_ws(s, i);
    if j == s.len() {
        Ok(())
    } else {
        Err(err(j))
    }
}
