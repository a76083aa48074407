//! The bytes every contender exchanges and the blocking client used against all of them.
//!
//! Framing follows docs/specs/ipc/framing.md: an 8-byte preface each way, then frames of an
//! 8-byte header (u32 big-endian payload length, encoding 0x01, flags 0, reserved 0) and a JSON
//! payload. The benches skip `hello`/`welcome`; a contender whose server needs them can use
//! [`FrameClient::send_frame`] and [`FrameClient::recv_frame`] before measuring.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The connection preface, both directions (framing.md §2).
pub const PREFACE: [u8; 8] = [0x89, 0x4c, 0x50, 0x48, 0x0d, 0x0a, 0x1a, 0x0a];
/// Frame header length (framing.md §3).
pub const HEADER_LEN: usize = 8;
/// Encoding byte for JSON text.
pub const ENCODING_JSON: u8 = 0x01;
/// The ping command every contender receives (58 bytes, the spec's worked example).
pub const PING_JSON: &[u8] = br#"{"type":"command","name":"ping","id":7,"body":{"nonce":1}}"#;
/// A pong of the size the raw servers send back (78 bytes).
pub const PONG_JSON: &[u8] =
    br#"{"type":"reply","name":"pong","ref":7,"body":{"nonce":1,"t_engine_us":123456}}"#;
/// Largest payload the bench client and raw servers accept.
pub const MAX_PAYLOAD: usize = 4096;

/// Header + payload as one buffer. Allocates the returned `Vec`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&[ENCODING_JSON, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// Checks a header and returns the payload length; `InvalidData` if encoding, flags or
/// reserved are not version-1 values or the length is 0 or above [`MAX_PAYLOAD`].
pub fn parse_header(h: &[u8; HEADER_LEN]) -> io::Result<usize> {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if h[4] != ENCODING_JSON || h[5] != 0 || h[6] != 0 || h[7] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame header {h:02x?}"),
        ));
    }
    if len == 0 || len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("payload length {len}"),
        ));
    }
    Ok(len)
}

/// Reads 8 bytes and fails with `InvalidData` unless they are the preface.
pub fn expect_preface(s: &mut impl Read) -> io::Result<()> {
    let mut p = [0u8; 8];
    s.read_exact(&mut p)?;
    if p != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad preface {p:02x?}"),
        ));
    }
    Ok(())
}

/// The blocking client used against every contender: one `write` of the whole request frame,
/// then `read_exact` of the 8-byte header and of the payload, into buffers allocated once.
pub struct FrameClient<S> {
    stream: S,
    request: Vec<u8>,
    reply: Vec<u8>,
    reply_len: usize,
}

impl<S: Read + Write> FrameClient<S> {
    /// Exchanges prefaces on a connected stream (sends ours, checks the server's) and prepares
    /// `request_payload` as the frame [`round_trip`](Self::round_trip) sends.
    pub fn new(mut stream: S, request_payload: &[u8]) -> io::Result<Self> {
        stream.write_all(&PREFACE)?;
        expect_preface(&mut stream)?;
        Ok(Self {
            stream,
            request: frame(request_payload),
            reply: vec![0; MAX_PAYLOAD],
            reply_len: 0,
        })
    }

    /// Sends one frame with `payload` (not timed; for handshakes such as `hello`).
    pub fn send_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame(payload))
    }

    /// Writes bytes that already form whole frames (not timed; does not allocate).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The underlying stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Receives one frame and returns its payload.
    pub fn recv_frame(&mut self) -> io::Result<&[u8]> {
        let mut h = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut h)?;
        let len = parse_header(&h)?;
        self.stream.read_exact(&mut self.reply[..len])?;
        self.reply_len = len;
        Ok(&self.reply[..len])
    }

    /// Sends the request frame, waits for one reply frame and returns the elapsed time.
    /// Does not allocate.
    pub fn round_trip(&mut self) -> io::Result<Duration> {
        let t0 = Instant::now();
        self.stream.write_all(&self.request)?;
        self.recv_frame()?;
        Ok(t0.elapsed())
    }

    /// The payload of the last reply received.
    pub fn last_reply(&self) -> &[u8] {
        &self.reply[..self.reply_len]
    }
}

/// Checks that `payload` is a JSON `pong` reply to ping id 7 with nonce 1 (off the timed path:
/// allocates while parsing). Used once per contender before measuring, so a server that
/// answers the wrong thing fails the bench instead of looking fast.
pub fn check_pong(payload: &[u8]) -> io::Result<()> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{why}: {}", String::from_utf8_lossy(payload)),
        )
    };
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| bad("reply is not JSON"))?;
    let ok =
        v["type"] == "reply" && v["name"] == "pong" && v["ref"] == 7 && v["body"]["nonce"] == 1;
    if !ok {
        return Err(bad("reply is not pong(ref 7, nonce 1)"));
    }
    Ok(())
}
