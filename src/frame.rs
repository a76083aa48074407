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

/// Header `flags` bit 0: the payload is a space-padded JSON envelope of `json_len` bytes followed
/// by an attachment of little-endian `f32` values (framing.md §3.1). Only the engine sends it,
/// only to a client that asked for attachments.
pub const FLAG_ATTACHMENT: u8 = 0x01;

/// `json_len` is a multiple of this, so an attachment starts 8-aligned in the frame.
pub const ATTACHMENT_ALIGN: usize = 8;

/// Largest `json_len`: the largest multiple of [`ATTACHMENT_ALIGN`] in a u16.
pub const MAX_JSON_LEN: usize = 65_528;

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
    /// Flags byte: 0, or [`FLAG_ATTACHMENT`] in an engine frame with an attachment.
    pub flags: u8,
    /// Bytes 6..7: 0 without [`FLAG_ATTACHMENT`], `json_len` with it.
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

    /// A header for a frame with an attachment: `len` payload bytes, the first `json_len` of
    /// them the space-padded JSON envelope.
    pub const fn with_attachment(len: u32, json_len: u16) -> Self {
        Self {
            len,
            encoding: Encoding::Json as u8,
            flags: FLAG_ATTACHMENT,
            reserved: json_len,
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

    /// Checks the header against version 1 and a payload limit, refusing every flag (what the
    /// engine does with a client's frames).
    ///
    /// The order matters: an oversize length is reported first because it is fatal (the stream
    /// cannot be resynchronised without reading the declared bytes).
    pub const fn check(self, max_frame: u32) -> Result<Encoding, DecodeError> {
        self.check_with(max_frame, false)
    }

    /// [`check`](Self::check), but with `attachments` a header with exactly [`FLAG_ATTACHMENT`]
    /// and a well-formed `json_len` (a multiple of 8, 8 ..= `len`, leaving a multiple of 4 for
    /// the attachment) is accepted too: what a client that asked for attachments does.
    pub const fn check_with(
        self,
        max_frame: u32,
        attachments: bool,
    ) -> Result<Encoding, DecodeError> {
        if self.len > max_frame {
            return Err(DecodeError::FrameTooLarge {
                declared: self.len,
                limit: max_frame,
            });
        }
        let bad = DecodeError::BadHeader {
            flags: self.flags,
            reserved: self.reserved,
        };
        if self.flags == FLAG_ATTACHMENT && attachments {
            let j = self.reserved as u32;
            let aligned = j.is_multiple_of(ATTACHMENT_ALIGN as u32);
            if !aligned
                || j < ATTACHMENT_ALIGN as u32
                || j > self.len
                || !(self.len - j).is_multiple_of(4)
            {
                return Err(bad);
            }
        } else if self.flags != 0 || self.reserved != 0 {
            return Err(bad);
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
    /// The JSON envelope's bytes: the whole payload, or its first `json_len` bytes (trailing
    /// padding spaces included) in a frame with an attachment.
    pub json: &'a [u8],
    /// The attachment (`f32` little-endian values), in a frame with [`FLAG_ATTACHMENT`].
    pub attachment: Option<&'a [u8]>,
}

impl<'a> Frame<'a> {
    /// A frame of `payload` as `header` describes it (`header` passed its check).
    fn split(encoding: Encoding, header: FrameHeader, payload: &'a [u8]) -> Self {
        let (json, attachment) = if header.flags == FLAG_ATTACHMENT {
            let (j, a) = payload.split_at(usize::from(header.reserved).min(payload.len()));
            (j, Some(a))
        } else {
            (payload, None)
        };
        Self {
            encoding,
            payload,
            json,
            attachment,
        }
    }
}

/// `out` cut into the header's 8 bytes and the space after them.
fn split_header(out: &mut [u8]) -> Result<(&mut [u8], &mut [u8]), EncodeError> {
    out.split_at_mut_checked(HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)
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
    let (head, body) = split_header(out)?;
    let n = write_payload(body)?;
    let len = match u32::try_from(n) {
        Ok(len) if len <= max_frame => len,
        _ => return Err(EncodeError::FrameTooLarge),
    };
    head.copy_from_slice(&FrameHeader::json(len).to_bytes());
    Ok(HEADER_LEN + n)
}

/// Writes one frame with an attachment into `out`; returns the bytes written.
///
/// `write_json` writes the JSON envelope (which must carry the `attachment` member, framing.md
/// §3.1) into the space after the header and returns its length; it is padded with spaces to a
/// multiple of 8, and `values`, each passed through `map`, follow as little-endian `f32`.
/// Fails with
/// [`EncodeError::BufferTooSmall`] when `out` is too small, and [`EncodeError::FrameTooLarge`]
/// when the JSON exceeds [`MAX_JSON_LEN`] or the payload `max_frame`. Allocates nothing.
pub fn write_frame_with_attachment<M, F>(
    out: &mut [u8],
    max_frame: u32,
    values: &[f32],
    map: M,
    write_json: F,
) -> Result<usize, EncodeError>
where
    M: Fn(f32) -> f32,
    F: FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
{
    let (head, body) = split_header(out)?;
    let n = write_json(body)?;
    let json_len = n.div_ceil(ATTACHMENT_ALIGN) * ATTACHMENT_ALIGN;
    if json_len > MAX_JSON_LEN {
        return Err(EncodeError::FrameTooLarge);
    }
    let total = json_len + 4 * values.len();
    let len = match u32::try_from(total) {
        Ok(len) if len <= max_frame => len,
        _ => return Err(EncodeError::FrameTooLarge),
    };
    let payload = body.get_mut(..total).ok_or(EncodeError::BufferTooSmall)?;
    let (json, att) = payload.split_at_mut(json_len);
    json[n..].fill(b' ');
    for (dst, v) in att.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&map(*v).to_le_bytes());
    }
    // `json_len` <= MAX_JSON_LEN, so it fits a u16.
    let json_len = u16::try_from(json_len).unwrap_or(u16::MAX);
    head.copy_from_slice(&FrameHeader::with_attachment(len, json_len).to_bytes());
    Ok(HEADER_LEN + total)
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
    attachments: bool,
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
            attachments: false,
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

    /// Accept frames with [`FLAG_ATTACHMENT`] (a client that asked for attachments) or refuse
    /// them as `bad_header` (the default, and what the engine always does).
    pub fn set_accept_attachments(&mut self, yes: bool) {
        self.attachments = yes;
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
        let checked = header.check_with(self.max_frame, self.attachments);
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
        let payload = &self.buf.as_ref()[from..from + header.len as usize];
        Some(checked.map(|encoding| Frame::split(encoding, header, payload)))
    }
}
