//! The per-connection session: a sans-I/O state machine (normative text:
//! `docs/specs/ipc/session.md`).
//!
//! The driver (the network thread, or a test) moves bytes and time in and out; the session never
//! reads a clock, never touches a socket and never allocates. Its buffers are given once, at
//! [`Session::new`].
//!
//! ```text
//!  Preface ──client preface──▶ Handshake ──hello ok──▶ Open ──goodbye / timeout / error──▶ Closing ──▶ Closed
//!     │                            │  bad version/token, busy, timeout                        ▲
//!     └── bad byte / timeout ──────┴───────────────────────────────────────────────────────────┘
//! ```
//!
//! Every command accepted from the wire gets exactly one answer: the session answers what it
//! handles itself (handshake, non-real-time ping, subscriptions, decode errors) and hands the rest
//! to the [`Driver`], counting them [`in flight`](Session::in_flight) until the driver calls
//! [`Session::answer`]. When a route is full the command waits in a one-command slot and the
//! session stops taking frames, so reading stops and TCP pushes back: nothing is dropped.
//!
//! The end of input ([`Session::rx_eof`]) and [`Session::shutdown`] keep that promise: every
//! complete frame already received is still taken and answered (carried out after a half-close;
//! `shutting_down` after a shutdown, or once the flush timeout after the half-close has passed),
//! and the engine's `goodbye` is always the last frame: nothing is routed or answered after it.

use crate::error::{DecodeError, ErrorCode};
use crate::frame::{FrameDecoder, PREFACE, PRE_WELCOME_MAX_FRAME};
pub use crate::message::AnalysisKey;
use crate::message::{
    self, Ack, AnalysisStream, Command, GoodbyeNotice, GoodbyeReason, Health, Hello, Message, Pong,
    Scope, Spectrum, Stream, SubscribeAnalysis, TransportState, UnsubscribeAnalysis, Welcome,
    MAX_ANALYSIS_SUBS, PROTOCOL_VERSION,
};

/// Monotonic time in nanoseconds since an epoch the driver chooses.
pub type Nanos = u64;

/// Most frames [`Session::poll`] processes per call; the rest wait for the next call.
pub const FRAMES_PER_POLL: usize = 32;

/// Free transmit space the session wants before it takes a frame: room for the largest answer
/// (a `welcome` followed by the two snapshot frames).
pub const ANSWER_ROOM: usize = 1024;

/// Transmit space telemetry may never use: kept for answers, so a slow reader sheds telemetry
/// before any ack or error is held back.
pub const TELEMETRY_RESERVE: usize = 2048;

/// Transmit space an analysis frame (`scope`, `spectrum`) must leave free: larger than
/// [`TELEMETRY_RESERVE`], so under a slow reader analysis is shed before meters and the other
/// telemetry, which are shed before any answer. A transmit buffer smaller than this plus one
/// analysis frame (about 4.3 KB for a 1024-bin spectrum with an attachment, 11 KB as JSON)
/// never sends analysis; the network thread's default (256 KiB) holds dozens.
pub const ANALYSIS_RESERVE: usize = 32 * 1024;

/// Real-time pings in flight whose `t_client_us` the session remembers, for a driver that does
/// not pass it back in [`Answer::Pong`]. When more are in flight, the oldest memory is dropped
/// (its `pong` then echoes only what the driver passes); the network thread always passes it.
pub const RT_PING_SLOTS: usize = 32;

/// Default of [`Session::set_flush_timeout`]: how long, after the client's end of input, the
/// session waits for full routes before it answers what is left `shutting_down` (half of it
/// after [`Session::shutdown`]).
pub const DEFAULT_FLUSH_TIMEOUT: Nanos = 1_000_000_000;

/// Longest accepted session token, in bytes.
pub const MAX_TOKEN: usize = message::MAX_TOKEN;

/// Numbers and identity a session needs; borrowed only during [`Session::new`].
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig<'a> {
    /// Largest payload accepted after `welcome`.
    pub max_frame: u32,
    /// Time from accept to a valid `hello`.
    pub handshake_timeout: Nanos,
    /// Advertised: the client sends something at least this often.
    pub heartbeat_interval: Nanos,
    /// A client silent this long is dropped.
    pub heartbeat_timeout: Nanos,
    /// A client that takes nothing from a non-empty transmit buffer this long is dropped.
    pub slow_consumer_timeout: Nanos,
    /// Session token the client must present (constant-time compare); `None` accepts any.
    pub token: Option<&'a [u8]>,
    /// Identity sent in `welcome`; `max_frame`, `heartbeat_ms`, `timeout_ms`, `taps` and
    /// `attachments` are overwritten from this config and the client's `hello`.
    pub welcome: &'a Welcome,
    /// Analysis taps the engine has (`welcome.taps`; a subscription's `tap` must be below it).
    /// 0 = no analysis streams.
    pub taps: u16,
    /// The engine sends `scope`/`spectrum` values as binary attachments to a client that asks
    /// (`hello.attachments`). False: always JSON arrays.
    pub attachments: bool,
}

/// Where the session stands. States only move forward (the order of the variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionState {
    /// Waiting for the client's preface.
    Preface,
    /// Preface seen; waiting for `hello`.
    Handshake,
    /// `welcome` sent; commands flow.
    Open,
    /// Ending: nothing more is read; the transmit buffer drains, then the socket closes.
    Closing,
    /// Done.
    Closed,
}

/// The answer to a command the driver carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ack`, with the engine sample clock for audio-route commands.
    Ack {
        /// Sample clock at which it took effect.
        sample: Option<u64>,
    },
    /// `pong` for a real-time ping.
    Pong {
        /// The ping's nonce.
        nonce: u32,
        /// The ping's own `t_client_us`; when `None`, the session echoes the one it remembers.
        t_client_us: Option<u64>,
        /// Sample clock when the audio thread saw it.
        sample: Option<u64>,
    },
    /// `error`.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable text.
        detail: &'static str,
    },
}

/// A route's queue is full: the command must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteFull;

/// Why the control route did not take a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The queue is full: the command waits.
    Full,
    /// No control handler: the command is answered `control_unavailable`.
    Unavailable,
}

/// What the session asks of its driver. Every method is called from [`Session::poll`].
pub trait Driver {
    /// At `hello`: may this connection become the controlling session? `false` answers
    /// `session_busy` and closes.
    fn claim(&mut self) -> bool;
    /// The controlling session ended (called once, after a successful `claim`).
    fn release(&mut self);
    /// Hands a real-time command (transport, `param.set`, `ping` with `rt`) to the audio thread.
    fn route_audio(&mut self, id: u32, cmd: &Command) -> Result<(), RouteFull>;
    /// Hands a graph edit or `engine.shutdown` to the control thread.
    fn route_control(&mut self, id: u32, cmd: &Command) -> Result<(), RouteError>;
    /// The state sent right after `welcome`.
    fn snapshot(&mut self) -> (TransportState, Health);
}

/// A set of telemetry streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSet(u8);

impl StreamSet {
    /// Whether `s` is in the set.
    pub const fn contains(self, s: Stream) -> bool {
        self.0 & (1 << s.index()) != 0
    }

    /// True when no stream is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, s: Stream) {
        self.0 |= 1 << s.index();
    }

    /// The streams in the set.
    pub fn iter(self) -> impl Iterator<Item = Stream> {
        Stream::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// What one [`Session::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Took a frame (or a frame error).
    Took,
    /// No complete frame is buffered.
    Idle,
    /// Cannot take a frame now: closing, a command waits for its route, or no room to answer.
    Blocked,
}

#[derive(Clone, Copy, Debug)]
struct Subscription {
    interval: Nanos,
    next: Nanos,
}

/// One entry of [`Session::analysis_subs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnalysisSubscription {
    /// What to compute.
    pub key: AnalysisKey,
    /// Frames per second asked for, 1 ..= 60.
    pub rate_hz: u16,
}

#[derive(Clone, Copy, Debug)]
struct AnalysisSlot {
    key: AnalysisKey,
    rate_hz: u16,
    timer: Subscription,
}

/// What [`Session::send_analysis`] is given for one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisData<'a> {
    /// Engine sample clock of the window's last sample.
    pub sample: u64,
    /// Samples the reader of this tap lost since the previous frame.
    pub missed: u64,
    /// Scope: samples each point covers (ignored for a spectrum).
    pub samples_per_point: u32,
    /// Spectrum: the sample rate in Hz (ignored for a scope).
    pub sample_rate: u32,
    /// Scope: 2 × points values, min[0..n] then max[0..n]. Spectrum: bins values, dBFS
    /// (the engine applies the -160 dB floor). Non-finite values are sent as the largest f32.
    pub values: &'a [f32],
}

/// Why [`Session::send_analysis`] sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisSendError {
    /// The session is not open (or is stopping).
    NotOpen,
    /// No subscription with this stream, tap and size (it changed or was removed meanwhile).
    NotSubscribed,
    /// `values` does not hold [`AnalysisKey::value_count`] values.
    WrongLength,
    /// The transmit buffer is short of room (or the frame exceeds the engine's 64 KiB): shed,
    /// counted in [`Session::telemetry_shed`].
    Shed,
}

/// A bounded transmit buffer.
#[derive(Debug)]
struct Tx<O> {
    buf: O,
    start: usize,
    end: usize,
}

impl<O: AsRef<[u8]> + AsMut<[u8]>> Tx<O> {
    fn free(&self) -> usize {
        self.buf.as_ref().len() - (self.end - self.start)
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.buf.as_ref()[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The writable tail, after moving pending bytes to the front.
    fn tail(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    fn put_raw(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.tail().get_mut(..bytes.len()) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }

    /// Encodes one frame, keeping `keep_free` bytes free after it; false if it does not fit.
    fn put<M: Message>(&mut self, id_or_ref: Option<u32>, body: &M, keep_free: usize) -> bool {
        self.put_with(keep_free, |out| {
            message::encode_frame(id_or_ref, body, out, u32::MAX)
        })
    }

    /// Runs an encoder on the free space minus `keep_free`; false if it does not fit.
    fn put_with<F>(&mut self, keep_free: usize, encode: F) -> bool
    where
        F: FnOnce(&mut [u8]) -> Result<usize, crate::error::EncodeError>,
    {
        let room = self.free().saturating_sub(keep_free);
        let tail = self.tail();
        let limit = room.min(tail.len());
        match encode(&mut tail[..limit]) {
            Ok(n) => {
                self.end += n;
                true
            }
            Err(_) => false,
        }
    }
}

/// Everything but the receive decoder, so a frame borrowed from the decoder can be handled while
/// the rest of the session changes.
#[derive(Debug)]
struct Core<O> {
    tx: Tx<O>,
    state: SessionState,
    now: Nanos,
    max_frame: u32,
    raise_limit: bool,
    handshake_deadline: Nanos,
    heartbeat_timeout: Nanos,
    slow_consumer_timeout: Nanos,
    last_rx: Nanos,
    last_tx_progress: Nanos,
    token: Option<heapless::Vec<u8, MAX_TOKEN>>,
    welcome: Welcome,
    sent_preface: bool,
    claimed: bool,
    released: bool,
    pending: Option<(u32, Command)>,
    in_flight: usize,
    rt_pings: heapless::Vec<(u32, u64), RT_PING_SLOTS>,
    subs: [Option<Subscription>; 3],
    analysis: [Option<AnalysisSlot>; MAX_ANALYSIS_SUBS],
    /// The engine allows attachments (`SessionConfig::attachments`); whether this session uses
    /// them is `welcome.attachments`, set from the client's `hello`.
    allow_attachments: bool,
    analysis_shed: u64,
    shed: u64,
    more: bool,
    eof: bool,
    linger: bool,
    rx_activity: bool,
    flush_timeout: Nanos,
    /// [`Session::shutdown`] was called: nothing more is read or carried out.
    stopping: bool,
    /// Set at end of input or shutdown: past it, nothing more is routed and what is left is
    /// answered `shutting_down`.
    drain_deadline: Option<Nanos>,
    /// Every complete frame received before the end of input has been taken.
    input_drained: bool,
    /// The engine's `goodbye` or a fatal error is queued: nothing may follow it.
    goodbye_sent: bool,
    discarded: u64,
}

/// One client connection's protocol state. See the [module docs](self).
///
/// `I` holds received bytes (at least 8 + `max_frame`); `O` holds bytes to send (at least
/// [`ANSWER_ROOM`] + [`TELEMETRY_RESERVE`]). Neither is ever resized.
#[derive(Debug)]
pub struct Session<I, O> {
    rx: FrameDecoder<I>,
    core: Core<O>,
}

impl<I, O> Session<I, O>
where
    I: AsRef<[u8]> + AsMut<[u8]>,
    O: AsRef<[u8]> + AsMut<[u8]>,
{
    /// A session for a connection accepted at `now`.
    ///
    /// Fails with [`DecodeError::BufferTooSmall`] when `rx` cannot hold a frame of
    /// `cfg.max_frame` or `tx` is smaller than [`ANSWER_ROOM`] + [`TELEMETRY_RESERVE`], and with
    /// [`DecodeError::OutOfRange`] when the token is longer than [`MAX_TOKEN`].
    pub fn new(cfg: &SessionConfig<'_>, rx: I, tx: O, now: Nanos) -> Result<Self, DecodeError> {
        let mut rx = FrameDecoder::new(rx, cfg.max_frame)?;
        rx.set_max_frame(PRE_WELCOME_MAX_FRAME.min(cfg.max_frame))?;
        if tx.as_ref().len() < ANSWER_ROOM + TELEMETRY_RESERVE {
            return Err(DecodeError::BufferTooSmall);
        }
        let token = match cfg.token {
            Some(t) => Some(
                heapless::Vec::from_slice(t)
                    .map_err(|_| DecodeError::OutOfRange { field: "token" })?,
            ),
            None => None,
        };
        let mut welcome = cfg.welcome.clone();
        welcome.max_frame = cfg.max_frame;
        welcome.heartbeat_ms = to_ms(cfg.heartbeat_interval);
        welcome.timeout_ms = to_ms(cfg.heartbeat_timeout);
        welcome.taps = cfg.taps;
        welcome.attachments = false;
        let core = Core {
            tx: Tx {
                buf: tx,
                start: 0,
                end: 0,
            },
            state: SessionState::Preface,
            now,
            max_frame: cfg.max_frame,
            raise_limit: false,
            handshake_deadline: now.saturating_add(cfg.handshake_timeout),
            heartbeat_timeout: cfg.heartbeat_timeout,
            slow_consumer_timeout: cfg.slow_consumer_timeout,
            last_rx: now,
            last_tx_progress: now,
            token,
            welcome,
            sent_preface: false,
            claimed: false,
            released: false,
            pending: None,
            in_flight: 0,
            rt_pings: heapless::Vec::new(),
            subs: [None; 3],
            analysis: [None; MAX_ANALYSIS_SUBS],
            allow_attachments: cfg.attachments,
            analysis_shed: 0,
            shed: 0,
            more: false,
            eof: false,
            linger: false,
            rx_activity: false,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            stopping: false,
            drain_deadline: None,
            input_drained: false,
            goodbye_sent: false,
            discarded: 0,
        };
        Ok(Self { rx, core })
    }

    /// Where to read socket bytes into. Empty means "do not read now": the session is closing,
    /// or it holds complete frames it cannot take yet (back-pressure).
    pub fn rx_space(&mut self) -> &mut [u8] {
        if self.core.state >= SessionState::Closing || self.core.stopping {
            return &mut [];
        }
        self.rx.spare()
    }

    /// Marks `n` bytes read into [`rx_space`](Self::rx_space) as received.
    ///
    /// Any byte counts as a sign of life for the heartbeat, even while frames wait behind a full
    /// route: a client that keeps sending is never dropped for the engine's own back-pressure.
    pub fn rx_commit(&mut self, n: usize) {
        self.rx.commit(n);
        self.core.rx_activity |= n > 0;
    }

    /// Sets the bound on the wait for full routes after the end of input (default
    /// [`DEFAULT_FLUSH_TIMEOUT`]; half of it after [`shutdown`](Self::shutdown)).
    pub fn set_flush_timeout(&mut self, t: Nanos) {
        self.core.flush_timeout = t;
    }

    /// The peer closed its side. Every complete frame already received is still taken by the
    /// next polls and answered (carried out, or `shutting_down` once the flush timeout after the
    /// end of input has passed); a partial frame is discarded, so nothing half-received applies.
    /// The session closes once all of them are taken.
    pub fn rx_eof(&mut self) {
        self.core.more = true;
        self.core.eof = true;
    }

    /// True after [`rx_eof`](Self::rx_eof).
    pub fn is_eof(&self) -> bool {
        self.core.eof
    }

    /// Processes received frames (at most [`FRAMES_PER_POLL`]), then deadlines (so bytes that
    /// arrived before a deadline count), then the end of input.
    pub fn poll<D: Driver>(&mut self, now: Nanos, d: &mut D) {
        self.core.now = now;
        self.core.more = false;
        if core::mem::take(&mut self.core.rx_activity) {
            self.core.last_rx = now;
        }
        if self.core.eof && self.core.drain_deadline.is_none() {
            self.core.drain_deadline = Some(now.saturating_add(self.core.flush_timeout));
        }
        // Liveness first: a session ended by `goodbye` routes nothing more in this poll.
        self.core.check_liveness();
        let mut last = Step::Blocked;
        if self.core.retry_pending(d) {
            for _ in 0..FRAMES_PER_POLL {
                last = self.step(d);
                if last != Step::Took {
                    break;
                }
            }
        }
        self.core.more = last == Step::Took;
        if self.rx.preface_done() {
            self.core.send_preface();
        }
        // The handshake deadline after the frames: a `hello` that arrived in time counts.
        self.core.check_handshake();
        self.core.finish_input(last);
        if self.core.state >= SessionState::Closing && self.core.claimed && !self.core.released {
            self.core.released = true;
            d.release();
        }
    }

    /// Takes one frame if the session can answer it.
    fn step<D: Driver>(&mut self, d: &mut D) -> Step {
        let c = &mut self.core;
        if c.state >= SessionState::Closing || c.pending.is_some() || c.tx.free() < ANSWER_ROOM {
            return Step::Blocked;
        }
        match self.rx.next_frame() {
            None => Step::Idle,
            Some(Err(e)) => {
                c.on_frame_error(e);
                Step::Took
            }
            Some(Ok(frame)) if c.giving_up() => {
                c.refuse(frame.payload);
                Step::Took
            }
            Some(Ok(frame)) => {
                c.on_payload(frame.payload, d);
                if core::mem::take(&mut c.raise_limit) {
                    // The buffer was checked for `max_frame` in `new`, so this cannot fail.
                    let _ = self.rx.set_max_frame(c.max_frame);
                }
                Step::Took
            }
        }
    }

    /// Queues the answer to an in-flight command. `Err` gives it back when the transmit buffer
    /// has no room: keep it, write [`tx_pending`](Self::tx_pending) out, and try again.
    pub fn answer(&mut self, id: u32, a: Answer) -> Result<(), Answer> {
        let c = &mut self.core;
        if c.goodbye_sent {
            // Nothing follows the engine's goodbye or a fatal error: the answer is lost with
            // the session.
            c.in_flight = c.in_flight.saturating_sub(1);
            c.discarded += 1;
            return Ok(());
        }
        // Ids need not be unique: only a pong consumes a remembered ping timestamp (the oldest
        // with that id: the audio route answers in order). An ack or an error may answer another
        // command with the same id.
        let remembered = match a {
            Answer::Pong { .. } => c.rt_ping_time(id),
            _ => None,
        };
        let ok = match a {
            Answer::Ack { sample } => c.put(Some(id), &Ack { sample }, 0),
            Answer::Pong {
                nonce,
                t_client_us,
                sample,
            } => {
                let t_client_us = t_client_us.or(remembered.map(|i| c.rt_pings[i].1));
                let t_engine_us = c.now / 1000;
                let pong = Pong {
                    nonce,
                    t_client_us,
                    t_engine_us,
                    sample,
                };
                c.put(Some(id), &pong, 0)
            }
            Answer::Error { code, detail } => c.put(
                Some(id),
                &message::error_body(code, format_args!("{detail}")),
                0,
            ),
        };
        if !ok {
            return Err(a);
        }
        if let Some(i) = remembered {
            c.rt_pings.remove(i);
        }
        c.in_flight = c.in_flight.saturating_sub(1);
        c.finish_shutdown();
        Ok(())
    }

    /// The subscribed streams whose next frame is due at `now`.
    pub fn telemetry_due(&self, now: Nanos) -> StreamSet {
        let mut set = StreamSet::default();
        if self.core.state != SessionState::Open || self.core.stopping {
            return set;
        }
        for s in Stream::ALL {
            if self.core.subs[s.index()].is_some_and(|sub| sub.next <= now) {
                set.insert(s);
            }
        }
        set
    }

    /// Sends one telemetry frame for `stream` and schedules the next. Returns false when it was
    /// shed because the transmit buffer is short of room (counted in
    /// [`telemetry_shed`](Self::telemetry_shed)), or the session is not open.
    pub fn send_telemetry<M: Message>(&mut self, stream: Stream, body: &M, now: Nanos) -> bool {
        let c = &mut self.core;
        c.now = now;
        if c.state != SessionState::Open || c.stopping {
            return false;
        }
        if let Some(sub) = &mut c.subs[stream.index()] {
            sub.next = sub.next.saturating_add(sub.interval).max(now);
        }
        if !c.put(None, body, TELEMETRY_RESERVE) {
            c.shed += 1;
            return false;
        }
        true
    }

    /// Telemetry frames shed in this session (analysis frames included).
    pub fn telemetry_shed(&self) -> u64 {
        self.core.shed
    }

    /// Analysis frames (`scope`, `spectrum`) shed in this session; also counted in
    /// [`telemetry_shed`](Self::telemetry_shed).
    pub fn analysis_shed(&self) -> u64 {
        self.core.analysis_shed
    }

    /// True when this session sends `scope`/`spectrum` values as binary attachments (the
    /// client asked and the engine allows it; `welcome.attachments`).
    pub fn attachments(&self) -> bool {
        self.core.welcome.attachments
    }

    /// The analysis subscriptions of this session (at most [`MAX_ANALYSIS_SUBS`]), for the
    /// network thread to build what the analysis worker must compute. Allocates nothing.
    pub fn analysis_subs(&self) -> impl Iterator<Item = AnalysisSubscription> + '_ {
        self.core
            .analysis
            .iter()
            .flatten()
            .map(|s| AnalysisSubscription {
                key: s.key,
                rate_hz: s.rate_hz,
            })
    }

    /// The analysis subscriptions whose next frame is due at `now` (none unless the session is
    /// open and not stopping). Allocates nothing.
    pub fn analysis_due(&self, now: Nanos) -> impl Iterator<Item = AnalysisKey> + '_ {
        let live = self.analysis_served();
        self.core
            .analysis
            .iter()
            .flatten()
            .filter(move |s| live && s.timer.next <= now)
            .map(|s| s.key)
    }

    /// Whether this session's analysis subscriptions are served: OPEN and not stopping (a
    /// closing session keeps its subscriptions listed but is sent no more analysis frames).
    pub fn analysis_served(&self) -> bool {
        self.core.state == SessionState::Open && !self.core.stopping
    }

    /// Skips this period of `sub` (e.g. the worker has no new window yet): schedules its next
    /// frame one interval on, as if one had been sent, so [`poll_at`](Self::poll_at) does not
    /// ask to be polled again at once. False when `sub` is not subscribed. Allocates nothing.
    pub fn skip_analysis(&mut self, sub: AnalysisKey, now: Nanos) -> bool {
        self.core.reschedule_analysis(sub, now)
    }

    /// Sends one `scope`/`spectrum` frame for `sub` and schedules its next one: JSON arrays,
    /// or a binary attachment when [`attachments`](Self::attachments). Analysis frames keep
    /// [`ANALYSIS_RESERVE`] bytes free, so they are shed before other telemetry, which is shed
    /// before any answer. Allocates nothing; network thread only.
    pub fn send_analysis(
        &mut self,
        sub: AnalysisKey,
        data: &AnalysisData<'_>,
        now: Nanos,
    ) -> Result<(), AnalysisSendError> {
        let c = &mut self.core;
        c.now = now;
        if c.state != SessionState::Open || c.stopping {
            return Err(AnalysisSendError::NotOpen);
        }
        if data.values.len() != sub.value_count() {
            return Err(AnalysisSendError::WrongLength);
        }
        if !c.reschedule_analysis(sub, now) {
            return Err(AnalysisSendError::NotSubscribed);
        }
        let values = (!c.welcome.attachments).then_some(data.values);
        let sent = match sub.stream {
            AnalysisStream::Scope => c.put_analysis(
                &Scope {
                    tap: sub.tap,
                    points: sub.size,
                    samples_per_point: data.samples_per_point,
                    sample: data.sample,
                    missed: data.missed,
                    values,
                },
                data.values,
            ),
            AnalysisStream::Spectrum => c.put_analysis(
                &Spectrum {
                    tap: sub.tap,
                    bins: sub.size,
                    sample_rate: data.sample_rate,
                    sample: data.sample,
                    missed: data.missed,
                    values,
                },
                data.values,
            ),
        };
        if sent {
            Ok(())
        } else {
            c.shed += 1;
            c.analysis_shed += 1;
            Err(AnalysisSendError::Shed)
        }
    }

    /// Bytes waiting to be written to the socket.
    pub fn tx_pending(&self) -> &[u8] {
        self.core.tx.pending()
    }

    /// Marks `n` bytes of [`tx_pending`](Self::tx_pending) as written.
    pub fn tx_consumed(&mut self, n: usize, now: Nanos) {
        if n > 0 {
            self.core.tx.consume(n);
            self.core.last_tx_progress = now;
        }
    }

    /// The next time [`poll`](Self::poll) has something to do even if no byte arrives.
    pub fn poll_at(&self) -> Option<Nanos> {
        self.core.poll_at()
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.core.state
    }

    /// True once the session is over: write out [`tx_pending`](Self::tx_pending) (bounded by
    /// the driver's own timeout), then close the socket.
    ///
    /// After a graceful end (the client's `goodbye` or end of input, [`shutdown`](Self::shutdown))
    /// the session lingers in [`SessionState::Closing`] until every command in flight is
    /// answered, so those answers still reach the client; the driver bounds that wait (and
    /// closes at once on a read or write error).
    pub fn is_closed(&self) -> bool {
        let c = &self.core;
        c.state >= SessionState::Closing && !(c.linger && c.in_flight > 0)
    }

    /// True once the session reached [`SessionState::Open`] (it held the controlling claim).
    pub fn was_open(&self) -> bool {
        self.core.claimed
    }

    /// True when this session holds the controlling claim.
    pub fn is_controlling(&self) -> bool {
        self.core.claimed && !self.core.released
    }

    /// Ends the session from the engine's side. Nothing more is read. The next polls answer
    /// every complete frame already received (and a command waiting for a full route)
    /// `shutting_down`, without carrying it out; once that is done and every command in flight
    /// is answered, or half the flush timeout has passed, `goodbye` (`shutdown`) is queued as
    /// the last frame and the session closes. Answers arriving after it are discarded
    /// ([`answers_discarded`](Self::answers_discarded)). Keep polling after this call.
    pub fn shutdown(&mut self, now: Nanos) {
        let c = &mut self.core;
        c.now = now;
        if c.stopping {
            return;
        }
        c.stopping = true;
        match c.state {
            // Before OPEN too: a preface and `hello` already received get their answer.
            SessionState::Preface | SessionState::Handshake | SessionState::Open => {
                let at = now.saturating_add(c.flush_timeout / 2);
                c.drain_deadline = Some(c.drain_deadline.map_or(at, |d| d.min(at)));
            }
            SessionState::Closing | SessionState::Closed => {}
        }
    }

    /// Answers the driver gave after the engine's `goodbye` (or a fatal error), which were
    /// discarded.
    pub fn answers_discarded(&self) -> u64 {
        self.core.discarded
    }

    /// Gives the receive and transmit buffers back, e.g. to reuse them for the next
    /// connection (their bytes are unspecified; nothing needs zeroing).
    pub fn into_buffers(self) -> (I, O) {
        (self.rx.into_inner(), self.core.tx.buf)
    }

    /// Commands handed to the driver and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight
    }

    /// True while a command waits for room in a full route (reading is paused).
    pub fn is_blocked(&self) -> bool {
        self.core.pending.is_some()
    }
}

fn to_ms(n: Nanos) -> u32 {
    u32::try_from(n / 1_000_000).unwrap_or(u32::MAX)
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

impl<O: AsRef<[u8]> + AsMut<[u8]>> Core<O> {
    /// Queues one frame; when the buffer was empty, the slow-consumer clock starts now.
    fn put<M: Message>(&mut self, id_or_ref: Option<u32>, body: &M, keep_free: usize) -> bool {
        let was_empty = self.tx.is_empty();
        let ok = self.tx.put(id_or_ref, body, keep_free);
        if ok && was_empty {
            self.last_tx_progress = self.now;
        }
        ok
    }

    /// Queues an analysis frame in the negotiated form, keeping [`ANALYSIS_RESERVE`] free. The
    /// engine's frames never exceed the default 64 KiB payload (framing.md §4).
    fn put_analysis<M: Message>(&mut self, body: &M, values: &[f32]) -> bool {
        let was_empty = self.tx.is_empty();
        let limit = crate::frame::DEFAULT_MAX_FRAME;
        let ok = if self.welcome.attachments {
            self.tx.put_with(ANALYSIS_RESERVE, |out| {
                message::encode_frame_with_attachment(None, body, values, out, limit)
            })
        } else {
            self.tx.put_with(ANALYSIS_RESERVE, |out| {
                message::encode_frame(None, body, out, limit)
            })
        };
        if ok && was_empty {
            self.last_tx_progress = self.now;
        }
        ok
    }

    /// Moves `sub`'s next frame one interval on, or one interval after `now` when it fell
    /// behind (no burst to catch up: a late window is stale anyway); false when it is not
    /// subscribed.
    fn reschedule_analysis(&mut self, sub: AnalysisKey, now: Nanos) -> bool {
        match self.analysis.iter_mut().flatten().find(|s| s.key == sub) {
            Some(slot) => {
                let t = &mut slot.timer;
                let next = t.next.saturating_add(t.interval);
                t.next = if next > now {
                    next
                } else {
                    now.saturating_add(t.interval)
                };
                true
            }
            None => false,
        }
    }

    fn subscribe_analysis(&mut self, id: u32, s: SubscribeAnalysis) {
        if s.tap >= self.welcome.taps {
            let taps = self.welcome.taps;
            return self.error(
                Some(id),
                ErrorCode::OutOfRange,
                format_args!("tap {} out of range: this engine has {taps} taps", s.tap),
            );
        }
        let key = |a: &AnalysisSlot| a.key.stream == s.stream && a.key.tap == s.tap;
        let at = match self
            .analysis
            .iter()
            .position(|a| a.as_ref().is_some_and(key))
        {
            Some(i) => i,
            None => match self.analysis.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    return self.error(
                        Some(id),
                        ErrorCode::TooManySubscriptions,
                        format_args!("at most {MAX_ANALYSIS_SUBS} analysis subscriptions"),
                    )
                }
            },
        };
        self.analysis[at] = Some(AnalysisSlot {
            key: AnalysisKey {
                stream: s.stream,
                tap: s.tap,
                size: s.size,
            },
            rate_hz: s.rate_hz,
            timer: Subscription {
                interval: 1_000_000_000 / u64::from(s.rate_hz.max(1)),
                next: self.now,
            },
        });
        self.put(Some(id), &Ack { sample: None }, 0);
    }

    fn unsubscribe_analysis(&mut self, id: u32, u: UnsubscribeAnalysis) {
        for slot in &mut self.analysis {
            if slot
                .is_some_and(|a| a.key.stream == u.stream && u.tap.is_none_or(|t| t == a.key.tap))
            {
                *slot = None;
            }
        }
        self.put(Some(id), &Ack { sample: None }, 0);
    }

    fn send_preface(&mut self) {
        if !self.sent_preface {
            self.sent_preface = true;
            self.tx.put_raw(&PREFACE);
            if self.state == SessionState::Preface {
                self.state = SessionState::Handshake;
            }
        }
    }

    /// Past the drain deadline, or stopping: frames are answered `shutting_down`, not routed.
    fn giving_up(&self) -> bool {
        self.stopping || self.drain_deadline.is_some_and(|t| self.now >= t)
    }

    /// Answers a frame taken while giving up: `shutting_down` when its id is readable.
    fn refuse(&mut self, payload: &[u8]) {
        self.send_preface();
        match Command::decode(payload) {
            Ok((id, _)) => self.error(
                Some(id),
                ErrorCode::ShuttingDown,
                format_args!("the session is ending; not carried out"),
            ),
            Err(e) => self.error(e.id, e.error.code(), format_args!("{}", e.error)),
        }
    }

    /// Heartbeat and slow-consumer limits (before frames are taken).
    fn check_liveness(&mut self) {
        let now = self.now;
        if self.pending.is_some() {
            // Blocked on a full route: the stall is the engine's, and the client's frames wait
            // unread behind it, so silence proves nothing. The clock restarts when unblocked.
            self.last_rx = now;
        }
        // After the end of input silence is expected: the client only reads now. While
        // stopping the engine reads nothing, so silence proves nothing either (session.md §3).
        let silent = now >= self.last_rx.saturating_add(self.heartbeat_timeout);
        if self.state == SessionState::Open && !self.eof && !self.stopping && silent {
            self.close_with_goodbye(GoodbyeReason::HeartbeatTimeout);
        }
        let stalled = now
            >= self
                .last_tx_progress
                .saturating_add(self.slow_consumer_timeout);
        if self.state < SessionState::Closing && !self.tx.is_empty() && stalled {
            self.close_with_goodbye(GoodbyeReason::SlowConsumer);
        }
    }

    /// The handshake deadline (after the frames received are taken).
    fn check_handshake(&mut self) {
        match self.state {
            SessionState::Preface if self.now >= self.handshake_deadline => {
                self.state = SessionState::Closing;
            }
            SessionState::Handshake if self.now >= self.handshake_deadline => {
                self.fatal(
                    None,
                    ErrorCode::HandshakeTimeout,
                    format_args!("no hello in time"),
                );
            }
            _ => {}
        }
    }

    fn poll_at(&self) -> Option<Nanos> {
        if self.more {
            return Some(self.now);
        }
        let mut at = match self.state {
            SessionState::Preface | SessionState::Handshake => Some(self.handshake_deadline),
            // The heartbeat does not apply after the end of input (`check_liveness`).
            SessionState::Open if !self.eof && !self.stopping => {
                Some(self.last_rx.saturating_add(self.heartbeat_timeout))
            }
            _ => None,
        };
        let earlier = |a: Option<Nanos>, b: Nanos| Some(a.map_or(b, |a| a.min(b)));
        // Only while still ahead: once it passed, the poll at or after it already gave up, and
        // what is left waits for the client to read (an event) or the slow-consumer limit. A
        // passed deadline here would make the driver poll in a loop.
        if let (Some(t), true) = (self.drain_deadline, self.state < SessionState::Closing) {
            if t > self.now {
                at = earlier(at, t);
            }
        }
        // No telemetry is due while stopping, so a subscription's `next` stays in the past.
        if self.state == SessionState::Open && !self.stopping {
            for sub in self.subs.iter().flatten() {
                at = earlier(at, sub.next);
            }
            for a in self.analysis.iter().flatten() {
                at = earlier(at, a.timer.next);
            }
        }
        if self.state < SessionState::Closing && !self.tx.is_empty() {
            at = earlier(
                at,
                self.last_tx_progress
                    .saturating_add(self.slow_consumer_timeout),
            );
        }
        at
    }

    /// After the end of input or a shutdown, closes once every complete frame received is taken
    /// (`last` is `Idle` and no command waits). After the client's end of input the session then
    /// lingers until the answers owed are out (the peer may only have half-closed); after a
    /// shutdown [`finish_shutdown`](Self::finish_shutdown) says `goodbye` when nothing is owed.
    fn finish_input(&mut self, last: Step) {
        if self.state >= SessionState::Closing || !(self.eof || self.stopping) {
            return;
        }
        if last != Step::Idle || self.pending.is_some() {
            return;
        }
        self.input_drained = true;
        if self.stopping {
            self.finish_shutdown();
        } else {
            self.state = SessionState::Closing;
            self.linger = true;
        }
    }

    /// Stopping with every frame taken: queues `goodbye` once nothing is in flight or the drain
    /// deadline passed (owed answers are then lost).
    fn finish_shutdown(&mut self) {
        if !self.stopping || !self.input_drained || self.state >= SessionState::Closing {
            return;
        }
        let late = self.drain_deadline.is_some_and(|t| self.now >= t);
        if self.in_flight > 0 && !late {
            return;
        }
        if self.state == SessionState::Open {
            self.close_with_goodbye(GoodbyeReason::Shutdown);
        } else {
            self.state = SessionState::Closing;
        }
    }

    /// Routes the waiting command, if any (or answers it `shutting_down` when giving up); true
    /// when nothing waits any more. Nothing is routed once the session is closing.
    fn retry_pending<D: Driver>(&mut self, d: &mut D) -> bool {
        let Some((id, cmd)) = self.pending.take() else {
            return true;
        };
        if self.state >= SessionState::Closing {
            return false;
        }
        if self.giving_up() {
            let body = message::error_body(
                ErrorCode::ShuttingDown,
                format_args!("the session is ending; not carried out"),
            );
            if !self.put(Some(id), &body, 0) {
                self.pending = Some((id, cmd));
                return false;
            }
            return true;
        }
        self.route(id, cmd, d);
        self.pending.is_none()
    }

    fn on_frame_error(&mut self, e: DecodeError) {
        if matches!(e, DecodeError::BadPreface { .. }) {
            self.state = SessionState::Closing;
            return;
        }
        self.send_preface();
        if e.is_fatal() {
            self.fatal(None, e.code(), format_args!("{e}"));
        } else {
            self.error(None, e.code(), format_args!("{e}"));
        }
    }

    fn on_payload<D: Driver>(&mut self, payload: &[u8], d: &mut D) {
        self.send_preface();
        self.last_rx = self.now;
        match Command::decode(payload) {
            // errors.md §2: the session state (step 8) is checked before the name and the body.
            Err(e) if self.state == SessionState::Handshake && e.hello == Some(false) => self
                .error(
                    e.id,
                    ErrorCode::HelloRequired,
                    format_args!("a command before hello"),
                ),
            Err(e) if e.hello == Some(true) && self.state != SessionState::Handshake => self.error(
                e.id,
                ErrorCode::AlreadyEstablished,
                format_args!("session already open"),
            ),
            Err(e) => self.error(e.id, e.error.code(), format_args!("{}", e.error)),
            Ok((id, cmd)) if self.state == SessionState::Handshake => self.handshake(id, cmd, d),
            Ok((id, cmd)) => self.dispatch(id, cmd, d),
        }
    }

    fn handshake<D: Driver>(&mut self, id: u32, cmd: Command, d: &mut D) {
        let Command::Hello(hello) = cmd else {
            let name = cmd.name();
            return self.error(
                Some(id),
                ErrorCode::HelloRequired,
                format_args!("`{name}` before hello"),
            );
        };
        if let Err((code, why)) = self.check_hello(&hello) {
            return self.fatal(Some(id), code, format_args!("{why}"));
        }
        if !d.claim() {
            return self.fatal(
                Some(id),
                ErrorCode::SessionBusy,
                format_args!("another client holds the session"),
            );
        }
        self.claimed = true;
        self.state = SessionState::Open;
        self.raise_limit = true;
        self.welcome.attachments = self.allow_attachments && hello.attachments;
        let welcome = self.welcome.clone();
        self.put(Some(id), &welcome, 0);
        let (transport, health) = d.snapshot();
        self.put(None, &transport, 0);
        self.put(
            None,
            &Health {
                telemetry_shed: self.shed,
                ..health
            },
            0,
        );
    }

    fn check_hello(&self, hello: &Hello) -> Result<(), (ErrorCode, &'static str)> {
        if hello.protocol != PROTOCOL_VERSION {
            return Err((
                ErrorCode::ProtocolVersion,
                "unsupported protocol version; this engine speaks 1",
            ));
        }
        let Some(want) = &self.token else {
            return Ok(());
        };
        let got = hello.token.as_ref().map_or(&b""[..], |t| t.as_bytes());
        if constant_time_eq(got, want) {
            Ok(())
        } else {
            Err((ErrorCode::BadToken, "missing or wrong session token"))
        }
    }

    fn dispatch<D: Driver>(&mut self, id: u32, cmd: Command, d: &mut D) {
        match cmd {
            Command::Hello(_) => self.error(
                Some(id),
                ErrorCode::AlreadyEstablished,
                format_args!("session already open"),
            ),
            Command::Ping(p) if !p.rt => {
                let pong = Pong {
                    nonce: p.nonce,
                    t_client_us: p.t_client_us,
                    t_engine_us: self.now / 1000,
                    sample: None,
                };
                self.put(Some(id), &pong, 0);
            }
            Command::Goodbye => {
                self.put(Some(id), &Ack { sample: None }, 0);
                self.state = SessionState::Closing;
                self.linger = true;
            }
            Command::Subscribe(s) => {
                let interval = 1_000_000_000 / u64::from(s.rate_hz.max(1));
                self.subs[s.stream.index()] = Some(Subscription {
                    interval,
                    next: self.now,
                });
                self.put(Some(id), &Ack { sample: None }, 0);
            }
            Command::Unsubscribe(u) => {
                self.subs[u.stream.index()] = None;
                self.put(Some(id), &Ack { sample: None }, 0);
            }
            Command::SubscribeAnalysis(s) => self.subscribe_analysis(id, s),
            Command::UnsubscribeAnalysis(u) => self.unsubscribe_analysis(id, u),
            cmd => self.route(id, cmd, d),
        }
    }

    /// Hands a command to its route; keeps it pending when the route is full.
    fn route<D: Driver>(&mut self, id: u32, cmd: Command, d: &mut D) {
        let routed = match &cmd {
            Command::AddNode(_)
            | Command::RemoveNode(_)
            | Command::Connect(_)
            | Command::Disconnect(_)
            | Command::Shutdown => d.route_control(id, &cmd),
            Command::Ping(p) => {
                let r = d.route_audio(id, &cmd).map_err(|_| RouteError::Full);
                if let (Ok(()), Some(t)) = (r, p.t_client_us) {
                    if self.rt_pings.is_full() {
                        // A ping answered by an error never consumed its entry: drop the oldest.
                        self.rt_pings.remove(0);
                    }
                    let _ = self.rt_pings.push((id, t));
                }
                r
            }
            _ => d.route_audio(id, &cmd).map_err(|_| RouteError::Full),
        };
        match routed {
            Ok(()) => self.in_flight += 1,
            Err(RouteError::Full) => self.pending = Some((id, cmd)),
            Err(RouteError::Unavailable) => self.error(
                Some(id),
                ErrorCode::ControlUnavailable,
                format_args!("this engine has no control handler"),
            ),
        }
    }

    /// Index of the remembered `t_client_us` of real-time ping `id`, if any.
    fn rt_ping_time(&self, id: u32) -> Option<usize> {
        self.rt_pings.iter().position(|(pid, _)| *pid == id)
    }

    fn error(&mut self, id: Option<u32>, code: ErrorCode, msg: core::fmt::Arguments<'_>) {
        let body = message::error_body(code, msg);
        self.put(id, &body, 0);
    }

    /// A fatal error: the last frame (errors.md §1), so an answer still owed is discarded.
    fn fatal(&mut self, id: Option<u32>, code: ErrorCode, msg: core::fmt::Arguments<'_>) {
        self.error(id, code, msg);
        self.state = SessionState::Closing;
        self.pending = None;
        self.goodbye_sent = true;
        self.linger = false;
    }

    /// Queues the engine's `goodbye`, the last frame: a command waiting for a route is never
    /// routed, and later answers are discarded.
    fn close_with_goodbye(&mut self, reason: GoodbyeReason) {
        self.put(None, &GoodbyeNotice { reason }, 0);
        self.state = SessionState::Closing;
        self.pending = None;
        self.goodbye_sent = true;
        self.linger = false;
    }
}

// Engine room (issue 14): when an analysis frame is due but the worker has no new value yet,
// the network thread must move the frame's deadline on without sending, or `poll_at` stays in
// the past and the thread polls in a loop.
impl<I, O> Session<I, O>
where
    I: AsRef<[u8]> + AsMut<[u8]>,
    O: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Puts the next frame of `sub` off until `until` without sending one (the engine has no
    /// new value for it yet); nothing is shed or counted. Returns false when `sub` is not
    /// subscribed. Allocates nothing; network thread only.
    pub fn defer_analysis(&mut self, sub: AnalysisKey, until: Nanos) -> bool {
        match self
            .core
            .analysis
            .iter_mut()
            .flatten()
            .find(|s| s.key == sub)
        {
            Some(slot) => {
                slot.timer.next = slot.timer.next.max(until);
                true
            }
            None => false,
        }
    }
}
