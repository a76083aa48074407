//! Framing: the connection preface and the 8-byte frame header (normative text:
//! `docs/specs/ipc/framing.md`).
//!
//! Nothing here allocates or panics, whatever bytes arrive. [`FrameDecoder`] works over a buffer the
//! caller provides once; a declared length is checked against the limit before a single payload
//! byte is buffered, so a hostile length costs nothing.

use crate::error::{DecodeError, EncodeError};

/// The 8 bytes each side sends before its first frame: `89 4c 50 48 0d 0a 1a 0a`.
///
/// Byte 0 is not ASCII, so a text protocol (an HTTP request, a telnet user) fails on the first byte.
pub const PREFACE: [u8; 8] = [0x89, b'L', b'P', b'H', 0x0D, 0x0A, 0x1A, 0x0A];

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Default limit on a frame's payload length: 64 KiB.
pub const DEFAULT_MAX_FRAME: u32 = 65_536;

/// Smallest payload limit an engine may be configured with.
pub const MIN_MAX_FRAME: u32 = 64;

/// Largest payload limit an engine may be configured with (16 MiB).
pub const MAX_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Largest payload a client may send before it has received `welcome`.
pub const PRE_WELCOME_MAX_FRAME: u32 = 4_096;

/// The payload encodings a frame header can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// `0x01`: one JSON object, UTF-8 without BOM.
    Json = 1,
}

impl Encoding {
    /// The encoding for a header byte, if version 1 defines it.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Json),
            _ => None,
        }
    }
}

/// A frame header as it stands on the wire, before any check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (big-endian on the wire).
    pub len: u32,
    /// Encoding byte (`0x01` = JSON).
    pub encoding: u8,
    /// Flags byte; must be 0 in version 1.
    pub flags: u8,
    /// Reserved; must be 0 in version 1.
    pub reserved: u16,
}

impl FrameHeader {
    /// A version-1 header for a JSON payload of `len` bytes.
    pub const fn json(len: u32) -> Self {
        Self {
            len,
            encoding: Encoding::Json as u8,
            flags: 0,
            reserved: 0,
        }
    }

    /// Reads a header from its 8 wire bytes. Never fails: checks are [`FrameHeader::check`]'s.
    pub const fn from_bytes(b: [u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            encoding: b[4],
            flags: b[5],
            reserved: u16::from_be_bytes([b[6], b[7]]),
        }
    }

    /// The 8 wire bytes of this header.
    pub const fn to_bytes(self) -> [u8; HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let r = self.reserved.to_be_bytes();
        [
            l[0],
            l[1],
            l[2],
            l[3],
            self.encoding,
            self.flags,
            r[0],
            r[1],
        ]
    }

    /// Checks the header against version 1 and a payload limit.
    ///
    /// The order matters: an oversize length is reported first because it is fatal (the stream
    /// cannot be resynchronised without reading the declared bytes).
    pub const fn check(self, max_frame: u32) -> Result<Encoding, DecodeError> {
        if self.len > max_frame {
            return Err(DecodeError::FrameTooLarge {
                declared: self.len,
                limit: max_frame,
            });
        }
        if self.flags != 0 || self.reserved != 0 {
            return Err(DecodeError::BadHeader {
                flags: self.flags,
                reserved: self.reserved,
            });
        }
        match Encoding::from_byte(self.encoding) {
            Some(_) if self.len == 0 => Err(DecodeError::EmptyPayload),
            Some(enc) => Ok(enc),
            None => Err(DecodeError::UnsupportedEncoding {
                encoding: self.encoding,
            }),
        }
    }
}

/// One complete frame, borrowed from the decoder's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The payload's encoding.
    pub encoding: Encoding,
    /// The payload bytes (exactly `header.len` of them).
    pub payload: &'a [u8],
}

/// Writes one frame (header + payload) into `out`; returns the bytes written.
///
/// `write_payload` gets the space after the header and returns how many bytes it wrote. Fails
/// with [`EncodeError::BufferTooSmall`] when the header does not fit or when `write_payload` fails,
/// and with [`EncodeError::FrameTooLarge`] when the payload exceeds `max_frame`. On failure the
/// bytes of `out` are unspecified and nothing should be sent from it.
pub fn write_frame<F>(
    out: &mut [u8],
    max_frame: u32,
    write_payload: F,
) -> Result<usize, EncodeError>
where
    F: FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
{
    let (head, body) = match out.split_at_mut_checked(HEADER_LEN) {
        Some(parts) => parts,
        None => return Err(EncodeError::BufferTooSmall),
    };
    let n = write_payload(body)?;
    let len = match u32::try_from(n) {
        Ok(len) if len <= max_frame => len,
        _ => return Err(EncodeError::FrameTooLarge),
    };
    head.copy_from_slice(&FrameHeader::json(len).to_bytes());
    Ok(HEADER_LEN + n)
}

/// Where a [`FrameDecoder`] stands in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting the peer's preface; the value counts bytes matched so far.
    Preface(u8),
    /// Expecting frames.
    Frames,
    /// A fatal error was seen; the decoder yields it forever.
    Failed(DecodeError),
}

/// A streaming frame decoder over a caller-provided buffer.
///
/// Feed it bytes in any split (one at a time, several frames at once, a header cut across reads)
/// with [`push`](Self::push) or [`spare`](Self::spare) + [`commit`](Self::commit); take complete
/// frames with [`next_frame`](Self::next_frame). The buffer must hold one header plus the largest
/// accepted payload; the decoder never allocates and never panics on any input.
///
/// Errors from [`DecodeError::is_fatal`] leave the decoder failed for good (the byte stream has
/// lost its frame boundaries). Other errors consume the offending frame and decoding goes on.
#[derive(Debug)]
pub struct FrameDecoder<B> {
    buf: B,
    start: usize,
    end: usize,
    max_frame: u32,
    phase: Phase,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> FrameDecoder<B> {
    /// A decoder that expects the peer's [`PREFACE`] first (what a server and a client both do).
    ///
    /// Fails with [`DecodeError::BufferTooSmall`] unless `buf` holds [`HEADER_LEN`] + `max_frame`.
    pub fn new(buf: B, max_frame: u32) -> Result<Self, DecodeError> {
        let mut dec = Self::without_preface(buf, max_frame)?;
        dec.phase = Phase::Preface(0);
        Ok(dec)
    }

    /// A decoder for a stream that starts directly with frames (tests, files, vectors).
    pub fn without_preface(buf: B, max_frame: u32) -> Result<Self, DecodeError> {
        let cap = buf.as_ref().len();
        if (cap as u64) < HEADER_LEN as u64 + u64::from(max_frame) {
            return Err(DecodeError::BufferTooSmall);
        }
        Ok(Self {
            buf,
            start: 0,
            end: 0,
            max_frame,
            phase: Phase::Frames,
        })
    }

    /// Gives the buffer back (its bytes are unspecified).
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// The payload limit in force.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Changes the payload limit, e.g. from the pre-`welcome` limit to the session's.
    ///
    /// Fails with [`DecodeError::BufferTooSmall`] if the buffer cannot hold it.
    pub fn set_max_frame(&mut self, max_frame: u32) -> Result<(), DecodeError> {
        if (self.buf.as_ref().len() as u64) < HEADER_LEN as u64 + u64::from(max_frame) {
            return Err(DecodeError::BufferTooSmall);
        }
        self.max_frame = max_frame;
        Ok(())
    }

    /// True once the peer's preface has been matched (always true without a preface).
    pub fn preface_done(&self) -> bool {
        match self.phase {
            Phase::Frames => true,
            Phase::Preface(_) => false,
            Phase::Failed(e) => !matches!(e, DecodeError::BadPreface { .. }),
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True when the decoder holds part of a frame (or of the preface): a close now would cut it.
    pub fn is_mid_frame(&self) -> bool {
        self.buffered() > 0 || matches!(self.phase, Phase::Preface(n) if n > 0)
    }

    /// The free space to read into; pair with [`commit`](Self::commit).
    ///
    /// Moves buffered bytes to the front first, so the space is as large as it can be. Empty when
    /// the buffer is full, which happens only while complete frames wait to be taken.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    /// Marks `n` bytes written into [`spare`](Self::spare) as received (clamped to its length).
    pub fn commit(&mut self, n: usize) {
        let cap = self.buf.as_ref().len();
        self.end = self.end.saturating_add(n).min(cap);
    }

    /// Copies as much of `bytes` as fits; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The next complete frame, an error for a bad one, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, DecodeError>> {
        match self.phase {
            Phase::Failed(e) => return Some(Err(e)),
            Phase::Preface(_) => {
                if let Err(e) = self.match_preface() {
                    self.phase = Phase::Failed(e);
                    return Some(Err(e));
                }
                if !self.preface_done() {
                    return None;
                }
            }
            Phase::Frames => {}
        }
        self.cut_frame()
    }

    fn match_preface(&mut self) -> Result<(), DecodeError> {
        while let Phase::Preface(matched) = self.phase {
            let Some(&byte) = self.buf.as_ref()[self.start..self.end].first() else {
                return Ok(());
            };
            let expected = PREFACE[usize::from(matched)];
            if byte != expected {
                return Err(DecodeError::BadPreface {
                    offset: matched,
                    byte,
                });
            }
            self.start += 1;
            let matched = matched + 1;
            self.phase = if usize::from(matched) == PREFACE.len() {
                Phase::Frames
            } else {
                Phase::Preface(matched)
            };
        }
        Ok(())
    }

    fn cut_frame(&mut self) -> Option<Result<Frame<'_>, DecodeError>> {
        let avail = &self.buf.as_ref()[self.start..self.end];
        let head: [u8; HEADER_LEN] = avail.get(..HEADER_LEN)?.try_into().ok()?;
        let header = FrameHeader::from_bytes(head);
        let checked = header.check(self.max_frame);
        if let Err(e) = checked {
            if e.is_fatal() {
                self.phase = Phase::Failed(e);
                return Some(Err(e));
            }
        }
        // Non-fatal or fine: the length is within the limit, so the frame fits the buffer.
        let total = HEADER_LEN + header.len as usize;
        if avail.len() < total {
            return None;
        }
        let from = self.start + HEADER_LEN;
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Some(checked.map(|encoding| Frame {
            encoding,
            payload: &self.buf.as_ref()[from..from + header.len as usize],
        }))
    }
}
