//! A small blocking client, for tests, examples and benches (and a model for other clients).
//!
//! ```no_run
//! use loophole_ipc::client::{Client, ClientOptions};
//! use loophole_ipc::message::{Play, ServerMessage};
//!
//! let addr = "127.0.0.1:40123".parse().unwrap();
//! let mut client = Client::connect(addr, &ClientOptions::default())?;
//! let mut telemetry = Vec::new();
//! match client.request(&Play {}, &mut telemetry)? {
//!     ServerMessage::Ack(ack) => println!("playing from sample {:?}", ack.sample),
//!     other => println!("refused: {other:?}"),
//! }
//! # Ok::<(), loophole_ipc::client::ClientError>(())
//! ```
//!
//! It connects with retry and exponential backoff (the engine may not be listening yet), sets
//! `TCP_NODELAY`, sends the preface and `hello`, checks the engine's preface and returns after
//! `welcome` and the state snapshot. It does not send heartbeats by itself: call
//! [`Client::ping`] (or send anything) at least every `welcome.heartbeat_ms`.
//!
//! Allocates its buffers at connect; sending and receiving reuse them.

use core::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::frame::{FrameDecoder, DEFAULT_MAX_FRAME, PREFACE};
use crate::message::{
    encode_frame, AnalysisMeta, GoodbyeReason, Health, Hello, Message, Ping, ServerMessage,
    TransportState, Welcome, PROTOCOL_VERSION,
};

/// How the client connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// `hello.client`. Default `"loophole-client/<version>"`.
    pub name: String,
    /// Session token for `hello` (from [`crate::config::token_from_env`]). Default `None`.
    pub token: Option<String>,
    /// Total time to keep retrying `connect()`. Default 5 s.
    pub connect_timeout: Duration,
    /// First retry delay; doubled up to 200 ms. Default 10 ms.
    pub retry_delay: Duration,
    /// How long a blocking receive waits. Default 5 s.
    pub io_timeout: Duration,
    /// Largest frame payload accepted from the engine. Default 65 536.
    pub max_frame: u32,
    /// Ask for binary attachments (`hello.attachments`): `scope`/`spectrum` values then arrive
    /// as raw `f32` after the envelope when the engine agrees. Default false (JSON arrays).
    /// Either way [`Received::values`] holds them.
    pub attachments: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            name: concat!("loophole-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            retry_delay: Duration::from_millis(10),
            io_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            attachments: false,
        }
    }
}

/// What went wrong on the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// `connect()` kept failing until the connect timeout.
    Connect(io::ErrorKind),
    /// A socket error.
    Io(io::ErrorKind),
    /// Nothing arrived within the I/O timeout.
    Timeout,
    /// The engine closed the connection.
    Closed,
    /// The engine said goodbye.
    Goodbye(GoodbyeReason),
    /// The engine's bytes could not be decoded (includes a wrong preface).
    Decode(DecodeError),
    /// A message could not be encoded.
    Encode(EncodeError),
    /// The handshake was refused with this error code.
    Refused(ErrorCode),
    /// The engine sent something the handshake did not expect.
    Unexpected,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(k) => write!(f, "cannot connect to the engine: {k}"),
            Self::Io(k) => write!(f, "connection error: {k}"),
            Self::Timeout => f.write_str("timed out waiting for the engine"),
            Self::Closed => f.write_str("the engine closed the connection"),
            Self::Goodbye(r) => write!(f, "the engine ended the session: {r:?}"),
            Self::Decode(e) => write!(f, "bad data from the engine: {e}"),
            Self::Encode(e) => write!(f, "cannot encode: {e}"),
            Self::Refused(c) => write!(f, "the engine refused the session: {c}"),
            Self::Unexpected => f.write_str("unexpected message during the handshake"),
        }
    }
}

impl core::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::UnexpectedEof => Self::Closed,
            k => Self::Io(k),
        }
    }
}

/// One message from the engine with its `ref`.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The `ref` (the id of the command answered), if any.
    pub reference: Option<u32>,
    /// The message.
    pub message: ServerMessage,
    /// For [`ServerMessage::Analysis`]: its values, from JSON arrays or the attachment alike
    /// (scope: min[0..n] then max[0..n]; spectrum: dB per bin). Empty otherwise. Allocated
    /// per analysis frame.
    pub values: Vec<f32>,
}

impl Received {
    /// The scalar fields and values of a `scope` or `spectrum` frame.
    pub fn analysis(&self) -> Option<(&AnalysisMeta, &[f32])> {
        match &self.message {
            ServerMessage::Analysis(m) => Some((m, &self.values)),
            _ => None,
        }
    }
}

/// A connected, handshaken client.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    dec: FrameDecoder<Vec<u8>>,
    out: Vec<u8>,
    next_id: u32,
    welcome: Welcome,
    snapshot: (Option<TransportState>, Option<Health>),
    io_timeout: Duration,
    backlog: std::collections::VecDeque<Received>,
}

impl Client {
    /// Connects with retry/backoff, then runs the handshake. Returns after `welcome` and the
    /// snapshot frames that follow it.
    pub fn connect(addr: SocketAddr, opts: &ClientOptions) -> Result<Self, ClientError> {
        let stream = connect_retry(addr, opts)?;
        Self::handshake(stream, opts)
    }

    /// Runs the handshake on an already connected stream.
    pub fn handshake(stream: TcpStream, opts: &ClientOptions) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(opts.io_timeout))?;
        let mut dec = FrameDecoder::new(vec![0u8; 8 + opts.max_frame as usize], opts.max_frame)
            .map_err(ClientError::Decode)?;
        // An engine sends attachments only after `welcome` says so; accepting them is
        // narrowed to what `welcome` agreed below.
        dec.set_accept_attachments(opts.attachments);
        let mut c = Self {
            stream,
            dec,
            out: vec![0u8; 8 + DEFAULT_MAX_FRAME as usize],
            next_id: 1,
            welcome: empty_welcome(),
            snapshot: (None, None),
            io_timeout: opts.io_timeout,
            backlog: std::collections::VecDeque::new(),
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: heapless::String::try_from(truncate(&opts.name, 64)).unwrap_or_default(),
            token: opts
                .token
                .as_deref()
                .and_then(|t| heapless::String::try_from(t).ok()),
            attachments: opts.attachments,
        };
        c.stream.write_all(&PREFACE)?;
        let id = c.send(&hello)?;
        let first = c.recv()?;
        match first {
            Received {
                message: ServerMessage::Welcome(w),
                reference,
                ..
            } if reference == Some(id) => c.welcome = w,
            Received {
                message: ServerMessage::Error(e),
                ..
            } => {
                return Err(ClientError::Refused(
                    ErrorCode::from_wire(&e.code).unwrap_or(ErrorCode::Internal),
                ))
            }
            _ => return Err(ClientError::Unexpected),
        }
        c.dec
            .set_accept_attachments(opts.attachments && c.welcome.attachments);
        for _ in 0..2 {
            match c.recv()?.message {
                ServerMessage::Transport(t) => c.snapshot.0 = Some(t),
                ServerMessage::Health(h) => c.snapshot.1 = Some(h),
                _ => return Err(ClientError::Unexpected),
            }
        }
        Ok(c)
    }

    /// The engine's `welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The engine instance id (new for every engine process).
    pub fn instance(&self) -> &str {
        &self.welcome.instance
    }

    /// True when this engine is not the one with instance id `previous` (it restarted: its
    /// state is new, not the state the client knew).
    pub fn is_new_engine(&self, previous: &str) -> bool {
        self.instance() != previous
    }

    /// The snapshot sent right after `welcome`.
    pub fn snapshot(&self) -> (Option<TransportState>, Option<Health>) {
        self.snapshot
    }

    /// The socket (for tests that need raw access).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends a command with the next id; returns the id.
    pub fn send<M: Message>(&mut self, body: &M) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send_with_id(id, body)?;
        Ok(id)
    }

    /// Sends a command with a chosen id.
    pub fn send_with_id<M: Message>(&mut self, id: u32, body: &M) -> Result<(), ClientError> {
        let n = encode_frame(
            Some(id),
            body,
            &mut self.out,
            self.welcome.max_frame.max(4096),
        )
        .map_err(ClientError::Encode)?;
        self.stream.write_all(&self.out[..n])?;
        Ok(())
    }

    /// Writes raw bytes (tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(Into::into)
    }

    /// The next message, waiting up to the I/O timeout. An engine `goodbye` is returned as a
    /// message (its error form is for [`request`](Self::request)).
    pub fn recv(&mut self) -> Result<Received, ClientError> {
        if let Some(r) = self.backlog.pop_front() {
            return Ok(r);
        }
        let deadline = Instant::now() + self.io_timeout;
        loop {
            if let Some(r) = self.next_buffered()? {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            let space = self.dec.spare();
            match self.stream.read(space) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.dec.commit(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Like [`recv`](Self::recv) with its own timeout; `Ok(None)` when nothing arrived.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Received>, ClientError> {
        let saved = self.io_timeout;
        self.io_timeout = timeout.max(Duration::from_micros(1));
        let r = self.recv();
        self.io_timeout = saved;
        match r {
            Ok(r) => Ok(Some(r)),
            Err(ClientError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn next_buffered(&mut self) -> Result<Option<Received>, ClientError> {
        match self.dec.next_frame() {
            None => Ok(None),
            Some(Err(e)) => Err(ClientError::Decode(e)),
            Some(Ok(frame)) => {
                let inc = ServerMessage::decode_frame(&frame).map_err(ClientError::Decode)?;
                let mut values = Vec::new();
                if let (ServerMessage::Analysis(meta), Some(v)) = (&inc.message, &inc.values) {
                    values.resize(meta.value_count(), 0.0);
                    meta.read_values(v, &mut values)
                        .map_err(ClientError::Decode)?;
                }
                Ok(Some(Received {
                    reference: inc.reference,
                    message: inc.message,
                    values,
                }))
            }
        }
    }

    /// Sends `body` and waits for its answer (`ack`, `pong` or `error` with `ref` = its id).
    /// Telemetry and other messages that arrive meanwhile are appended to `other`.
    ///
    /// Fails with [`ClientError::Goodbye`] if the engine ends the session first.
    pub fn request<M: Message>(
        &mut self,
        body: &M,
        other: &mut Vec<Received>,
    ) -> Result<ServerMessage, ClientError> {
        let id = self.send(body)?;
        self.wait_for(id, other)
    }

    /// Waits for the answer to command `id`, collecting everything else into `other`.
    pub fn wait_for(
        &mut self,
        id: u32,
        other: &mut Vec<Received>,
    ) -> Result<ServerMessage, ClientError> {
        loop {
            let r = self.recv()?;
            if r.reference == Some(id) {
                return Ok(r.message);
            }
            if let ServerMessage::Goodbye(g) = r.message {
                other.push(r);
                return Err(ClientError::Goodbye(g.reason));
            }
            other.push(r);
        }
    }

    /// A non-real-time ping; returns the round-trip time measured here.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        self.ping_with(false)
    }

    /// A ping through the audio thread (`rt`); returns the round-trip time.
    pub fn ping_rt(&mut self) -> Result<Duration, ClientError> {
        self.ping_with(true)
    }

    fn ping_with(&mut self, rt: bool) -> Result<Duration, ClientError> {
        let t0 = Instant::now();
        let nonce = self.next_id;
        let mut other = Vec::new();
        let answer = self.request(
            &Ping {
                nonce,
                t_client_us: None,
                rt,
            },
            &mut other,
        );
        let rtt = t0.elapsed();
        self.backlog.extend(other);
        match answer? {
            ServerMessage::Pong(p) if p.nonce == nonce => Ok(rtt),
            _ => Err(ClientError::Unexpected),
        }
    }
}

/// `connect()` with exponential backoff until `opts.connect_timeout`.
pub fn connect_retry(addr: SocketAddr, opts: &ClientOptions) -> Result<TcpStream, ClientError> {
    let deadline = Instant::now() + opts.connect_timeout;
    let mut delay = opts.retry_delay.max(Duration::from_millis(1));
    loop {
        match TcpStream::connect_timeout(&addr, opts.connect_timeout.max(Duration::from_millis(1)))
        {
            Ok(s) => return Ok(s),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ClientError::Connect(e.kind()));
                }
                std::thread::sleep(delay.min(deadline - now));
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn empty_welcome() -> Welcome {
    Welcome {
        protocol: 0,
        engine: heapless::String::new(),
        instance: heapless::String::new(),
        sample_rate: 0,
        block_size: 0,
        max_frame: 0,
        heartbeat_ms: 0,
        timeout_ms: 0,
        attachments: false,
        taps: 0,
    }
}
