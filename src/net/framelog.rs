//! The engine-side frame log: every frame in and out of every connection, with timestamps and
//! connection ids, as JSON lines in a file (a debugging aid; see `tools/wireshark/README.md`).
//!
//! Turned on with [`ServerBuilder::frame_log`](crate::net::ServerBuilder::frame_log) (or
//! [`FRAME_LOG_ENV`] through [`FrameLogConfig::from_env`]; the example engine also has
//! `signal --log-frames PATH`). Off by default; when off it costs one branch per read and write.
//!
//! # Format
//!
//! One JSON object per line, in the order the network thread moved the bytes:
//!
//! ```text
//! {"event":"start","t_us":1520,"unix_us":1764584400001520,"pid":4242,"max_bytes":67108864}
//! {"t_us":1790,"conn":4294967296,"dir":"in","event":"preface"}
//! {"t_us":1790,"conn":4294967296,"dir":"in","len":79,"encoding":1,"flags":0,"reserved":0,"type":"command","name":"hello","id":1,"payload":{"type":"command",...}}
//! {"t_us":1850,"conn":4294967296,"dir":"out","len":47,"encoding":1,"flags":0,"reserved":0,"type":"reply","name":"ack","ref":2,"payload":{...}}
//! {"t_us":9000,"conn":4294967296,"event":"close"}
//! ```
//!
//! - `t_us`: microseconds of the engine clock ([`clock::now_us`], the clock of `pong.t_engine_us`)
//!   when the read or write that completed the frame returned; `unix_us` in the `start` line
//!   maps it to wall-clock time.
//! - `conn`: the connection id (unique per server); `dir`: `in` (client to engine) or `out`.
//! - A frame whose payload is a valid envelope has `type`, `name`, `id`/`ref` and the payload
//!   itself under `payload`; an engine frame with a binary attachment logs only its JSON
//!   envelope there (trailing padding included) and the attachment's size as `attachment_bytes`; otherwise `decode_error` (the error code the engine would send)
//!   and the payload as `payload_text` (a JSON string) or `payload_hex`.
//! - Other events: `preface`; `not_protocol` (the first bytes were not the preface: nothing
//!   more is logged for that direction); `oversize` (a header above `max_frame`: the engine
//!   closes without reading the payload); `eof` (the peer closed its side); `close`; `gap`
//!   (`bytes_lost` bytes were not logged because the log's buffer was full: that direction is
//!   not decoded any further); `truncated` (the file reached its size bound: the last line).
//!
//! # Threads, allocation, blocking
//!
//! - Network thread ([`LoggedStream`]): after each successful read or write it copies the bytes
//!   into a buffer allocated once at start, under a mutex that the writer thread holds only to
//!   swap two buffers. No allocation, no system call (the clock is read through the vDSO), no
//!   file I/O. When the buffer is full the bytes are not logged (counted; a `gap` line follows).
//! - Writer thread (`loophole-framelog`): every [`WRITER_POLL`] it swaps the buffers, decodes
//!   the frames and writes the lines. It allocates when a connection first appears and while its
//!   per-direction payload buffers grow to the largest frame seen, then no more per message.
//! - The audio thread never sees any of this.
//! - Bounded: the file stops growing at [`FrameLogConfig::max_bytes`] (a `truncated` line ends
//!   it); the buffer is [`FrameLogConfig::buffer`] bytes, twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::clock;
use crate::frame::PREFACE;
use crate::message::Envelope;

/// Environment variable naming the frame log's file (read by [`FrameLogConfig::from_env`]).
pub const FRAME_LOG_ENV: &str = "LOOPHOLE_FRAME_LOG";
/// Default bound of the log file, bytes (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default size of each of the two hand-over buffers, bytes (4 MiB).
pub const DEFAULT_BUFFER: usize = 4 * 1024 * 1024;
/// How often the writer thread takes what the network thread logged.
pub const WRITER_POLL: Duration = Duration::from_millis(5);
/// Largest frame length any engine accepts (framing.md section 4): beyond it `oversize` in
/// both directions.
const MAX_FRAME_LIMIT: u32 = 16 * 1024 * 1024;
/// A record in the hand-over buffer: kind (1), connection (8), time ns (8), length (4), bytes.
const RECORD_HEADER: usize = 21;
/// Room kept for the `truncated` line.
const TRUNCATED_LINE_MAX: u64 = 128;

/// Where and how much to log: the engine's frame log (every frame in and out of every
/// connection as JSON lines; the format is in `tools/wireshark/README.md`). Pass it to
/// [`ServerBuilder::frame_log`](crate::net::ServerBuilder::frame_log).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameLogConfig {
    /// The log file (created, or truncated if it exists).
    pub path: PathBuf,
    /// Bound of the file in bytes. Default [`DEFAULT_MAX_BYTES`].
    pub max_bytes: u64,
    /// Size of each hand-over buffer in bytes. Default [`DEFAULT_BUFFER`]; raised to hold at
    /// least one full receive and transmit buffer.
    pub buffer: usize,
}

impl FrameLogConfig {
    /// A log at `path` with the default bounds. Allocates the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            buffer: DEFAULT_BUFFER,
        }
    }

    /// A log at the path in [`FRAME_LOG_ENV`]; `None` when it is unset or empty.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(FRAME_LOG_ENV)
            .filter(|p| !p.is_empty())
            .map(Self::new)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rec {
    In = 0,
    Out = 1,
    Close = 2,
    GapIn = 3,
    GapOut = 4,
    Eof = 5,
}

impl Rec {
    fn from_u8(b: u8) -> Option<Self> {
        [
            Self::In,
            Self::Out,
            Self::Close,
            Self::GapIn,
            Self::GapOut,
            Self::Eof,
        ]
        .into_iter()
        .find(|r| *r as u8 == b)
    }
}

#[derive(Debug)]
struct Shared {
    /// Records appended by the network thread (capacity fixed at start).
    front: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

/// The network thread's handle on the log (cloned into every [`LoggedStream`]).
#[derive(Clone, Debug)]
pub(crate) struct Tap(Arc<Shared>);

impl Tap {
    /// Appends one record; `false` (nothing appended) when the buffer has no room.
    fn record(&self, kind: Rec, key: u64, len: u32, bytes: &[u8]) -> bool {
        let now = clock::now_ns();
        let mut buf = self.0.front.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.capacity() - buf.len() < RECORD_HEADER + bytes.len() {
            return false;
        }
        buf.push(kind as u8);
        buf.extend_from_slice(&key.to_le_bytes());
        buf.extend_from_slice(&now.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(bytes);
        true
    }
}

/// The running log: owned by the server handle, finished after the network thread is joined.
#[derive(Debug)]
pub(crate) struct FrameLog {
    shared: Arc<Shared>,
    join: Option<JoinHandle<()>>,
}

impl FrameLog {
    /// Creates the file and starts the writer thread. `largest_chunk` is the most one read or
    /// write can move (the larger of the receive and transmit buffers). Allocates both buffers.
    pub(crate) fn start(
        cfg: &FrameLogConfig,
        max_frame: u32,
        largest_chunk: usize,
    ) -> io::Result<Self> {
        let file = File::create(&cfg.path)?;
        let size = cfg.buffer.max(2 * (largest_chunk + RECORD_HEADER));
        let shared = Arc::new(Shared {
            front: Mutex::new(Vec::with_capacity(size)),
            stop: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            back: Vec::with_capacity(size),
            out: BufWriter::with_capacity(64 * 1024, file),
            line: Vec::with_capacity(8 * 1024),
            written: 0,
            max_bytes: cfg.max_bytes.max(2 * TRUNCATED_LINE_MAX),
            truncated: false,
            max_frame,
            conns: HashMap::new(),
        };
        let join = std::thread::Builder::new()
            .name("loophole-framelog".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            shared,
            join: Some(join),
        })
    }

    /// A handle for the network thread.
    pub(crate) fn tap(&self) -> Tap {
        Tap(Arc::clone(&self.shared))
    }

    /// Writes what is left and closes the file. Call after the network thread has ended (then
    /// every record is in the buffer). Blocks for at most one writer pass.
    pub(crate) fn finish(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for FrameLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A connection's socket that logs what it reads and writes (when a [`Tap`] is given) and its
/// close. Otherwise a plain [`TcpStream`] (`Deref`).
#[derive(Debug)]
pub(crate) struct LoggedStream {
    stream: TcpStream,
    tap: Option<Tap>,
    key: u64,
    /// Bytes not logged (buffer full) since the last record, per direction (in, out).
    lost: [u64; 2],
}

impl LoggedStream {
    /// Wraps `stream` of connection `key`. Clones the tap (a reference count): no allocation.
    pub(crate) fn new(stream: TcpStream, tap: Option<&Tap>, key: u64) -> Self {
        Self {
            stream,
            tap: tap.cloned(),
            key,
            lost: [0; 2],
        }
    }

    fn log(&mut self, dir: usize, bytes: &[u8]) {
        let Some(tap) = &self.tap else {
            return;
        };
        let (data, gap) = if dir == 0 {
            (Rec::In, Rec::GapIn)
        } else {
            (Rec::Out, Rec::GapOut)
        };
        if self.lost[dir] > 0 {
            let lost = u32::try_from(self.lost[dir]).unwrap_or(u32::MAX);
            if !tap.record(gap, self.key, lost, &[]) {
                self.lost[dir] += bytes.len() as u64;
                return;
            }
            self.lost[dir] = 0;
        }
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        if !tap.record(data, self.key, len, bytes) {
            self.lost[dir] += bytes.len() as u64;
        }
    }
}

impl Read for LoggedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        if n > 0 {
            self.log(0, &buf[..n]);
        } else if let (Some(tap), false) = (&self.tap, buf.is_empty()) {
            tap.record(Rec::Eof, self.key, 0, &[]);
        }
        Ok(n)
    }
}

impl Write for LoggedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.log(1, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl std::ops::Deref for LoggedStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl mio::event::Source for LoggedStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.stream.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.stream.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.stream.deregister(r)
    }
}

impl Drop for LoggedStream {
    fn drop(&mut self) {
        if let Some(tap) = &self.tap {
            tap.record(Rec::Close, self.key, 0, &[]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

/// Decoding state of one direction of one connection.
#[derive(Default)]
struct Parser {
    /// Preface bytes matched so far (8: done).
    preface: usize,
    header: [u8; 8],
    have: usize,
    payload: Vec<u8>,
    /// Payload length of the frame being read, once its header is complete.
    need: Option<usize>,
    /// Nothing more is decoded (not the protocol, a gap, an oversize header).
    stopped: bool,
}

struct Writer {
    shared: Arc<Shared>,
    back: Vec<u8>,
    out: BufWriter<File>,
    line: Vec<u8>,
    written: u64,
    max_bytes: u64,
    truncated: bool,
    max_frame: u32,
    conns: HashMap<u64, [Parser; 2]>,
}

const DIRS: [&str; 2] = ["in", "out"];

impl Writer {
    fn run(mut self) {
        self.line.clear();
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let _ = write!(
            self.line,
            "{{\"event\":\"start\",\"t_us\":{},\"unix_us\":{unix_us},\"pid\":{},\"max_bytes\":{}}}",
            clock::now_us(),
            std::process::id(),
            self.max_bytes
        );
        self.emit();
        loop {
            let stop = self.shared.stop.load(Ordering::Acquire);
            {
                let mut front = self
                    .shared
                    .front
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                std::mem::swap(&mut *front, &mut self.back);
            }
            let back = std::mem::take(&mut self.back);
            self.process(&back);
            self.back = back;
            self.back.clear();
            let _ = self.out.flush();
            if stop {
                return;
            }
            std::thread::sleep(WRITER_POLL);
        }
    }

    fn process(&mut self, mut recs: &[u8]) {
        while recs.len() >= RECORD_HEADER {
            let kind = Rec::from_u8(recs[0]);
            let key = u64::from_le_bytes(recs[1..9].try_into().unwrap_or_default());
            let t_us = u64::from_le_bytes(recs[9..17].try_into().unwrap_or_default()) / 1_000;
            let len = u32::from_le_bytes(recs[17..21].try_into().unwrap_or_default());
            let data_len = match kind {
                Some(Rec::In | Rec::Out) => len as usize,
                _ => 0,
            };
            let Some(data) = recs.get(RECORD_HEADER..RECORD_HEADER + data_len) else {
                return; // cannot happen: the network thread appends whole records
            };
            match kind {
                Some(Rec::In) => self.bytes(t_us, key, 0, data),
                Some(Rec::Out) => self.bytes(t_us, key, 1, data),
                Some(Rec::GapIn) => self.gap(t_us, key, 0, len),
                Some(Rec::GapOut) => self.gap(t_us, key, 1, len),
                Some(Rec::Eof) => self.event(t_us, key, Some(0), "eof"),
                Some(Rec::Close) => {
                    self.conns.remove(&key);
                    self.event(t_us, key, None, "close");
                }
                None => return,
            }
            recs = &recs[RECORD_HEADER + data_len..];
        }
    }

    fn event(&mut self, t_us: u64, key: u64, dir: Option<usize>, what: &str) {
        self.line.clear();
        let _ = write!(self.line, "{{\"t_us\":{t_us},\"conn\":{key},");
        if let Some(d) = dir {
            let _ = write!(self.line, "\"dir\":\"{}\",", DIRS[d]);
        }
        let _ = write!(self.line, "\"event\":\"{what}\"}}");
        self.emit();
    }

    fn gap(&mut self, t_us: u64, key: u64, dir: usize, lost: u32) {
        self.conns.entry(key).or_default()[dir].stopped = true;
        self.line.clear();
        let _ = write!(
            self.line,
            "{{\"t_us\":{t_us},\"conn\":{key},\"dir\":\"{}\",\"event\":\"gap\",\"bytes_lost\":{lost}}}",
            DIRS[dir]
        );
        self.emit();
    }

    /// Feeds bytes of one direction to its parser, writing a line per completed item.
    fn bytes(&mut self, t_us: u64, key: u64, dir: usize, mut data: &[u8]) {
        let mut parsers = self.conns.remove(&key).unwrap_or_default();
        let p = &mut parsers[dir];
        while !data.is_empty() && !p.stopped {
            if p.preface < PREFACE.len() {
                if data[0] != PREFACE[p.preface] {
                    p.stopped = true;
                    self.line.clear();
                    let _ = write!(
                        self.line,
                        "{{\"t_us\":{t_us},\"conn\":{key},\"dir\":\"{}\",\"event\":\"not_protocol\",\"offset\":{},\"byte\":{}}}",
                        DIRS[dir], p.preface, data[0]
                    );
                    self.emit();
                    break;
                }
                p.preface += 1;
                data = &data[1..];
                if p.preface == PREFACE.len() {
                    self.event(t_us, key, Some(dir), "preface");
                }
                continue;
            }
            let Some(need) = p.need else {
                let take = (8 - p.have).min(data.len());
                p.header[p.have..p.have + take].copy_from_slice(&data[..take]);
                p.have += take;
                data = &data[take..];
                if p.have == 8 {
                    let len = u32::from_be_bytes(p.header[..4].try_into().unwrap_or_default());
                    // The engine closes at an oversize header and never reads the payload.
                    let limit = if dir == 0 {
                        self.max_frame
                    } else {
                        MAX_FRAME_LIMIT
                    };
                    if len > limit {
                        p.stopped = true;
                        self.oversize(t_us, key, dir, &p.header);
                        break;
                    }
                    p.need = Some(len as usize);
                    p.payload.clear();
                }
                if p.need == Some(0) {
                    self.frame(t_us, key, dir, p);
                }
                continue;
            };
            let take = (need - p.payload.len()).min(data.len());
            p.payload.extend_from_slice(&data[..take]);
            data = &data[take..];
            if p.payload.len() == need {
                self.frame(t_us, key, dir, p);
            }
        }
        self.conns.insert(key, parsers);
    }

    fn header_fields(&mut self, t_us: u64, key: u64, dir: usize, h: &[u8; 8]) {
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let reserved = u16::from_be_bytes([h[6], h[7]]);
        self.line.clear();
        let _ = write!(
            self.line,
            "{{\"t_us\":{t_us},\"conn\":{key},\"dir\":\"{}\",\"len\":{len},\"encoding\":{},\"flags\":{},\"reserved\":{reserved}",
            DIRS[dir], h[4], h[5]
        );
    }

    fn oversize(&mut self, t_us: u64, key: u64, dir: usize, h: &[u8; 8]) {
        self.header_fields(t_us, key, dir, h);
        let _ = write!(
            self.line,
            ",\"event\":\"oversize\",\"max_frame\":{}}}",
            self.max_frame
        );
        self.emit();
    }

    /// Writes the line of a complete frame and resets the parser for the next header.
    fn frame(&mut self, t_us: u64, key: u64, dir: usize, p: &mut Parser) {
        let h = p.header;
        self.header_fields(t_us, key, dir, &h);
        let mut payload = &p.payload[..];
        // An engine frame may carry an attachment (framing.md section 3.1): the envelope is its
        // first `json_len` bytes; the `f32` values after it are counted, not logged.
        let header = crate::frame::FrameHeader::from_bytes(h);
        let attachment = dir == 1
            && header.flags == crate::frame::FLAG_ATTACHMENT
            && header.check_with(u32::MAX, true).is_ok();
        let mut attachment_bytes = 0;
        if attachment {
            let json_len = usize::from(header.reserved).min(payload.len());
            attachment_bytes = payload.len() - json_len;
            payload = &payload[..json_len];
        }
        // The engine's order of checks (errors.md section 2).
        let decoded = if !attachment && (h[5] != 0 || h[6] != 0 || h[7] != 0) {
            Err("bad_header")
        } else if h[4] != 1 {
            Err("unsupported_encoding")
        } else if payload.is_empty() {
            Err("invalid_json")
        } else {
            Envelope::parse(payload).map_err(|e| e.code().as_str())
        };
        match decoded {
            Ok(env) => {
                let _ = write!(
                    self.line,
                    ",\"type\":\"{}\",\"name\":\"{}\"",
                    env.kind.as_str(),
                    env.name
                );
                if let Some(id) = env.id {
                    let _ = write!(self.line, ",\"id\":{id}");
                }
                if let Some(r) = env.reference {
                    let _ = write!(self.line, ",\"ref\":{r}");
                }
                if attachment {
                    let _ = write!(self.line, ",\"attachment_bytes\":{attachment_bytes}");
                }
                // Valid JSON: control bytes can only be whitespace, kept off the line.
                self.line.extend_from_slice(b",\"payload\":");
                self.line
                    .extend(payload.iter().map(|&b| if b < 0x20 { b' ' } else { b }));
            }
            Err(code) => {
                let _ = write!(self.line, ",\"decode_error\":\"{code}\"");
                match core::str::from_utf8(payload) {
                    Ok(text) => {
                        self.line.extend_from_slice(b",\"payload_text\":");
                        json_string(&mut self.line, text);
                    }
                    Err(_) => {
                        self.line.extend_from_slice(b",\"payload_hex\":\"");
                        for b in payload {
                            let _ = write!(self.line, "{b:02x}");
                        }
                        self.line.push(b'"');
                    }
                }
            }
        }
        self.line.push(b'}');
        self.emit();
        p.have = 0;
        p.need = None;
        p.payload.clear();
    }

    /// Writes `self.line` and a newline, unless the size bound is reached.
    fn emit(&mut self) {
        if self.truncated {
            return;
        }
        let n = self.line.len() as u64 + 1;
        if self.written + n + TRUNCATED_LINE_MAX > self.max_bytes {
            self.truncated = true;
            self.line.clear();
            let _ = write!(
                self.line,
                "{{\"event\":\"truncated\",\"t_us\":{},\"max_bytes\":{}}}",
                clock::now_us(),
                self.max_bytes
            );
        }
        self.line.push(b'\n');
        if self.out.write_all(&self.line).is_ok() {
            self.written += self.line.len() as u64;
        }
    }
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: the engine-side mio stream and the client's std stream.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    fn writer(shared: &Arc<Shared>, path: &std::path::Path) -> Writer {
        Writer {
            shared: Arc::clone(shared),
            back: Vec::new(),
            out: BufWriter::new(File::create(path).unwrap()),
            line: Vec::new(),
            written: 0,
            max_bytes: DEFAULT_MAX_BYTES,
            truncated: false,
            max_frame: 65_536,
            conns: HashMap::new(),
        }
    }

    /// A full buffer never blocks the network thread: the bytes are dropped, counted, and the
    /// next record of that connection and direction is preceded by a `gap` with the count;
    /// that direction is then not decoded further (its framing is lost).
    #[test]
    fn a_full_buffer_drops_counts_and_reports_a_gap() {
        let shared = Arc::new(Shared {
            front: Mutex::new(Vec::with_capacity(2 * RECORD_HEADER + 40)),
            stop: AtomicBool::new(false),
        });
        let tap = Tap(Arc::clone(&shared));
        let (server, _client) = pair();
        let mut s = LoggedStream::new(server, Some(&tap), 7);
        s.log(1, &PREFACE); // fits
        s.log(1, &[0u8; 100]); // does not fit: lost
        assert_eq!(s.lost, [0, 100]);
        let taken = std::mem::take(&mut *shared.front.lock().unwrap());
        *shared.front.lock().unwrap() = Vec::with_capacity(taken.capacity());
        s.log(1, &[1, 2, 3]); // room again: gap record, then the data
        assert_eq!(s.lost, [0, 0]);
        let again = shared.front.lock().unwrap().clone();
        let path = std::env::temp_dir().join(format!("loophole-gap-{}.jsonl", std::process::id()));
        let mut w = writer(&shared, &path);
        w.process(&taken);
        w.process(&again);
        w.out.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("\"dir\":\"out\",\"event\":\"preface\""),
            "{text}"
        );
        assert!(
            lines[1].contains("\"event\":\"gap\",\"bytes_lost\":100"),
            "{text}"
        );
        // Negative control: without the loss the same bytes decode further (a header begins).
        let mut w2 = writer(&shared, &path);
        w2.bytes(0, 7, 1, &PREFACE);
        w2.bytes(0, 7, 1, &[0, 0, 0, 2, 1, 0, 0, 0, b'{', b'}']);
        w2.out.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains("\"len\":2"), "{text}");
        drop(s);
    }

    #[test]
    fn json_string_escapes() {
        let mut v = Vec::new();
        json_string(&mut v, "a\"b\\c\n\u{1}é");
        assert_eq!(v, b"\"a\\\"b\\\\c\\u000a\\u0001\xc3\xa9\"");
    }
}
