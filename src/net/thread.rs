//! The event loop of the network thread.
//!
//! One pass: wait (epoll, deadlines in a timerfd) → accept → take replies from the audio and
//! control threads → for each connection read, let the session process frames, send due
//! telemetry, write → close what is finished. Every loop is bounded.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::sys::{self as timer, Timer};
use super::Status;
use crate::clock;
use crate::config::ServerConfig;
use crate::control::{ControlLink, ControlOp, ControlRequest, ControlTicket, Received, SendFail};
use crate::message::{self, Command, Health, Meters, Stream, Welcome};
use crate::rt::{HealthSnapshot, NetEndpoint, RtCommand, RtOp, RtReply, MAX_METER_CHANNELS};
use crate::session::{Answer, Driver, RouteError, RouteFull, Session, SessionConfig, SessionState};

/// Token of the listener.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the waker (shutdown, control replies).
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// Token of the deadline timer.
const TIMER: Token = Token(usize::MAX - 3);

/// Read/poll/write rounds per connection per pass (then the next pass comes at once).
const ROUNDS: usize = 8;
/// Connections accepted per pass; the rest wait for the next pass (see `Worker::accept_more`).
const ACCEPTS_PER_PASS: usize = 64;
/// Rounds of `spin_for_replies` between two reads of the audio thread's callback flag and clock.
const SPIN_CHECK_EVERY: u32 = 64;
/// Replies taken from the audio queue per pass.
const REPLY_BUDGET: usize = 1024;
/// With nothing in flight the reply queue is still drained every this many `telemetry_poll`s.
const IDLE_POLL_FACTOR: u64 = 10;
/// When to look for the audio thread's answers, given the predicted end of the callback that
/// takes the queued commands (`None` before the first callback).
///
/// At the predicted end plus `margin`; if that has passed (the callback started late, or is still
/// running: then the wake-up spins), again in [`LATE_CALLBACK_RETRY_NS`] rather than a whole
/// projected period later; if the prediction is older than `poll` (the device stopped), at the
/// safety-net interval `poll`.
fn reply_wake(predicted: Option<u64>, now: u64, margin: u64, poll: u64) -> u64 {
    let safety = now.saturating_add(poll);
    let wake = match predicted {
        Some(t) if t.saturating_add(poll) < now => safety,
        Some(t) if t.saturating_add(margin) > now => t.saturating_add(margin),
        Some(_) => now.saturating_add(LATE_CALLBACK_RETRY_NS),
        None => safety,
    };
    wake.min(safety)
}

/// While the callback that should answer queued commands is late (its predicted end has
/// passed), how soon to look again (ns): short, because the answer leaves at the next look.
const LATE_CALLBACK_RETRY_NS: u64 = 25_000;
/// Owner of the answers a previous server on the same bridge was still owed: its slot part is
/// out of range, so it never matches a connection and those answers are discarded (and counted).
const NOBODY: u64 = u64::MAX;
/// Connection slots beyond `max_half_open`: the controlling client and a few that are closing.
const EXTRA_SLOTS: usize = 4;

type Sess = Session<Box<[u8]>, Box<[u8]>>;

/// One accepted socket and its session.
struct Conn {
    stream: super::framelog::LoggedStream,
    session: Sess,
    key: u64,
    readable: bool,
    /// An event said the peer closed its side (or errored): read until end of stream.
    read_closed: bool,
    writable: bool,
    closing_since: Option<u64>,
    dead: bool,
    /// `Session::shutdown` was called (server stopping).
    shut: bool,
    /// When it was accepted: the oldest connection not yet OPEN is evicted first.
    accepted_at: u64,
    /// When the client last took bytes (or when it was accepted).
    last_write: u64,
}

impl Conn {
    /// When a closing connection is closed regardless: `flush` after it began closing. A
    /// half-closed session that was OPEN and owes nothing more but bytes the client is still
    /// reading is kept while the client makes progress, up to `slow` without any (session.md
    /// §7: the wait for a slow reader after a half-close is bounded by the slow-consumer limit).
    fn close_by(&self, since: u64, flush: u64, slow: u64) -> u64 {
        let by = since.saturating_add(flush);
        let s = &self.session;
        if s.is_eof() && s.was_open() && s.is_closed() && !s.tx_pending().is_empty() {
            return by.max(self.last_write.max(since).saturating_add(slow));
        }
        by
    }
}

/// What the [`Driver`] needs: everything but the connection table.
struct Hub {
    net: NetEndpoint,
    control: ControlLink,
    controller: Option<u64>,
    last_controller_ns: u64,
    /// Answers owed by the audio thread, oldest first: (owner, command id, an rt ping's
    /// `t_client_us`). The audio thread answers in the order it received, so the front entry
    /// owns the next answer; its pong echoes exactly its own ping's time.
    rt_owners: VecDeque<(u64, u32, Option<u64>)>,
    /// The audio thread's endpoint was dropped (seen by `pump`; final): what it still owed is
    /// answered `audio_unavailable`.
    audio_gone: bool,
    /// Control requests in flight: (owner, id, ticket). Replies are matched by ticket: ids are
    /// the clients' and need not be unique.
    control_owners: VecDeque<(u64, u32, ControlTicket)>,
    /// Sequence number of the last control request (tickets start at 1; 0 is `NONE`).
    control_seq: u64,
    control_limit: usize,
    /// Answers produced on this thread for a command no route could take.
    immediate: VecDeque<(u64, u32, Answer)>,
    /// One answer the owner's transmit buffer had no room for; nothing else is popped meanwhile.
    held: Option<(u64, u32, Answer)>,
    transport: crate::rt::TransportState,
    peak: [f32; MAX_METER_CHANNELS],
    rms: [f32; MAX_METER_CHANNELS],
    meter_n: usize,
    dsp_load_max: f32,
    status: Arc<Status>,
}

/// The driver handed to one session's `poll`.
struct Routes<'a> {
    hub: &'a mut Hub,
    key: u64,
}

impl Driver for Routes<'_> {
    fn claim(&mut self) -> bool {
        if self.hub.controller.is_some() {
            return false;
        }
        self.hub.controller = Some(self.key);
        self.hub
            .status
            .client_connected
            .store(true, Ordering::Relaxed);
        true
    }

    fn release(&mut self) {
        if self.hub.controller == Some(self.key) {
            self.hub.controller = None;
            self.hub.last_controller_ns = clock::now_ns();
            self.hub
                .status
                .client_connected
                .store(false, Ordering::Relaxed);
        }
    }

    fn route_audio(&mut self, id: u32, cmd: &Command) -> Result<(), RouteFull> {
        let Some(op) = rt_op(cmd) else {
            // Not a real-time command: the session never routes one here. Answer, never drop.
            let a = Answer::Error {
                code: crate::ErrorCode::Internal,
                detail: "command has no real-time route",
            };
            self.hub.immediate.push_back((self.key, id, a));
            return Ok(());
        };
        if self.hub.audio_gone || self.hub.net.is_audio_gone() {
            // Nobody would ever take it: answer now (the next `pump` delivers it).
            self.hub.immediate.push_back((self.key, id, AUDIO_GONE));
            return Ok(());
        }
        self.hub
            .net
            .try_send(RtCommand { id, op })
            .map_err(|_| RouteFull)?;
        // If the audio side went away after this check, `pump` answers this one too.
        let t_client_us = match cmd {
            Command::Ping(p) => p.t_client_us,
            _ => None,
        };
        self.hub.rt_owners.push_back((self.key, id, t_client_us));
        Ok(())
    }

    fn route_control(&mut self, id: u32, cmd: &Command) -> Result<(), RouteError> {
        let Some(op) = control_op(cmd) else {
            let a = Answer::Error {
                code: crate::ErrorCode::Internal,
                detail: "command has no control route",
            };
            self.hub.immediate.push_back((self.key, id, a));
            return Ok(());
        };
        if self.hub.control_owners.len() >= self.hub.control_limit {
            return Err(RouteError::Full);
        }
        let ticket = ControlTicket::new(self.hub.control_seq + 1);
        match self.hub.control.try_send(ControlRequest { id, op, ticket }) {
            Ok(()) => {
                self.hub.control_seq += 1;
                self.hub.control_owners.push_back((self.key, id, ticket));
                Ok(())
            }
            Err(SendFail::Full) => Err(RouteError::Full),
            Err(SendFail::Unavailable) => Err(RouteError::Unavailable),
        }
    }

    fn snapshot(&mut self) -> (message::TransportState, Health) {
        (self.hub.transport, self.hub.health(0))
    }
}

/// The answer to an audio-route command once the audio thread is gone.
const AUDIO_GONE: Answer = Answer::Error {
    code: crate::ErrorCode::AudioUnavailable,
    detail: "the audio thread is gone",
};

fn rt_op(cmd: &Command) -> Option<RtOp> {
    Some(match cmd {
        Command::Play => RtOp::Play,
        Command::Stop => RtOp::Stop,
        Command::Seek(s) => RtOp::Seek { position: s.sample },
        Command::Tempo(t) => RtOp::Tempo { bpm: t.bpm },
        Command::Loop(l) => RtOp::Loop {
            start: l.start,
            end: l.end,
            enabled: l.enabled,
        },
        Command::ParamSet(p) => RtOp::ParamSet {
            node: p.node,
            param: p.param,
            value: p.value,
            ramp_ms: p.ramp_ms.unwrap_or(0.0),
        },
        Command::Ping(p) => RtOp::Ping { nonce: p.nonce },
        _ => return None,
    })
}

fn control_op(cmd: &Command) -> Option<ControlOp> {
    Some(match cmd {
        Command::AddNode(a) => ControlOp::AddNode(a.clone()),
        Command::RemoveNode(r) => ControlOp::RemoveNode { node: r.node },
        Command::Connect(e) => ControlOp::Connect(*e),
        Command::Disconnect(e) => ControlOp::Disconnect(*e),
        Command::Shutdown => ControlOp::Shutdown,
        _ => return None,
    })
}

fn sat32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Hub {
    /// Answers are still to come from a live audio thread.
    fn rt_waiting(&self) -> bool {
        !self.audio_gone && self.net.commands_in_flight() > 0
    }

    /// An `engine.health` body: the audio side's counters, the DSP-load maximum over the
    /// callbacks since the previous health frame (the last known one if no callback completed
    /// since), and this session's shed count.
    fn health(&mut self, shed: u64) -> Health {
        if let Some(load) = self.net.take_dsp_load_max() {
            self.dsp_load_max = load;
        }
        health_msg(&self.net.health(), self.dsp_load_max, shed)
    }
}

fn health_msg(h: &HealthSnapshot, dsp_load: f32, shed: u64) -> Health {
    Health {
        callbacks: h.callbacks,
        xruns: h.xruns,
        dsp_load,
        cmd_queue_len: sat32(h.cmd_queue_len),
        cmd_queue_capacity: sat32(h.cmd_queue_capacity),
        cmd_queue_high: sat32(h.cmd_queue_high),
        reply_queue_high: sat32(h.reply_queue_high),
        telemetry_dropped: h.telemetry_dropped,
        telemetry_shed: shed,
    }
}

fn answer_of(r: RtReply) -> Option<Answer> {
    Some(match r {
        RtReply::Ack { sample, .. } => Answer::Ack {
            sample: Some(sample),
        },
        RtReply::Reject { reason, .. } => Answer::Error {
            code: crate::ErrorCode::from_wire(reason.as_code())
                .unwrap_or(crate::ErrorCode::Internal),
            detail: reject_detail(reason),
        },
        RtReply::Pong { nonce, sample, .. } => Answer::Pong {
            nonce,
            t_client_us: None,
            sample: Some(sample),
        },
        RtReply::Transport(_) => return None,
    })
}

fn reject_detail(r: crate::rt::RejectReason) -> &'static str {
    use crate::rt::RejectReason as R;
    match r {
        R::UnknownNode => "the engine has no node with that id",
        R::UnknownParam => "the node has no parameter with that id",
        R::OutOfRange => "value out of range for the engine",
        R::Unsupported => "not supported by this engine",
    }
}

/// A connection's receive and transmit buffers.
type BufferPair = (Box<[u8]>, Box<[u8]>);

/// The network thread's state.
pub(crate) struct Worker {
    cfg: ServerConfig,
    welcome: Welcome,
    poll: Poll,
    listener: Option<TcpListener>,
    timer: Timer,
    timer_ok: bool,
    slots: Vec<Option<Conn>>,
    /// One receive/transmit buffer pair per free slot, allocated once at spawn and reused: a
    /// connection costs no allocation and no zeroing (a flood of refused or garbage connections
    /// must not stall the thread).
    buffers: Vec<BufferPair>,
    next_gen: u32,
    hub: Hub,
    /// The listener may have connections waiting: the previous pass stopped at
    /// [`ACCEPTS_PER_PASS`] (the listener is edge-triggered, no new event will come for them).
    accept_more: bool,
    stopping: bool,
    stop_started: u64,
    stop_deadline: u64,
    orphaned: Arc<AtomicBool>,
    supervisor_gone_at: Option<u64>,
    orphan_reported: bool,
    orphan_delivered: bool,
    next_orphan_check: u64,
    initial_ppid: u32,
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Worker {
    pub(crate) fn new(
        cfg: ServerConfig,
        poll: Poll,
        mut listener: TcpListener,
        net: NetEndpoint,
        control: ControlLink,
        status: Arc<Status>,
        orphaned: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut timer = Timer::new()?;
        timer.register(poll.registry(), TIMER)?;
        let welcome = Welcome {
            protocol: message::PROTOCOL_VERSION,
            engine: heapless::String::try_from(cfg.engine_name.as_str()).unwrap_or_default(),
            instance: heapless::String::try_from(cfg.instance.as_str()).unwrap_or_default(),
            sample_rate: cfg.sample_rate,
            block_size: cfg.block_size,
            max_frame: cfg.max_frame,
            heartbeat_ms: 0,
            timeout_ms: 0,
            attachments: false,
            taps: 0,
        };
        let control_limit = cfg.control_capacity * 2 + 8;
        let slots = cfg.max_half_open + EXTRA_SLOTS;
        let now = clock::now_ns();
        // At most the command queue's plus the reply queue's capacity is in flight; the default
        // reply queue is twice the command queue. A larger reply queue makes this grow (once).
        let mut rt_owners = VecDeque::with_capacity(net.health().cmd_queue_capacity * 3 + 16);
        // The endpoint may come from a stopped server with commands still in flight (see
        // `ServerHandle::shutdown`): their answers come first and belong to nobody here.
        rt_owners.extend((0..net.commands_in_flight()).map(|_| (NOBODY, 0, None)));
        Ok(Self {
            welcome,
            poll,
            listener: Some(listener),
            timer,
            timer_ok: true,
            slots: (0..slots).map(|_| None).collect(),
            buffers: (0..slots)
                .map(|_| {
                    let rx = vec![0u8; cfg.rx_buffer].into_boxed_slice();
                    (rx, vec![0u8; cfg.tx_buffer].into_boxed_slice())
                })
                .collect(),
            next_gen: 1,
            hub: Hub {
                net,
                control,
                controller: None,
                last_controller_ns: now,
                rt_owners,
                audio_gone: false,
                control_owners: VecDeque::with_capacity(control_limit),
                control_limit,
                control_seq: 0,
                immediate: VecDeque::with_capacity(16),
                held: None,
                transport: crate::rt::TransportState::default(),
                peak: [0.0; MAX_METER_CHANNELS],
                rms: [0.0; MAX_METER_CHANNELS],
                meter_n: 0,
                dsp_load_max: 0.0,
                status,
            },
            accept_more: false,
            stopping: false,
            stop_started: 0,
            stop_deadline: 0,
            orphaned,
            supervisor_gone_at: None,
            orphan_reported: false,
            orphan_delivered: false,
            next_orphan_check: now,
            initial_ppid: timer::parent_pid(),
            cfg,
        })
    }

    /// The thread body. Returns when stopped and flushed (or the flush timeout passed), giving
    /// the bridge endpoint back.
    pub(crate) fn run(mut self) -> NetEndpoint {
        // Timers of this thread fire within ~1 ns of their deadline instead of the default
        // 50 µs slack: the wake after the audio callback is only `wake_margin` late.
        let _ = timer::set_timer_slack_1ns();
        let mut events = Events::with_capacity(256);
        loop {
            let now = clock::now_ns();
            self.check_stop(now);
            if self.stopping && (self.live_conns() == 0 || now >= self.stop_deadline) {
                break;
            }
            let timeout = self.arm(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            let mut timer_fired = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_more = true,
                    WAKER => {}
                    TIMER => timer_fired = true,
                    Token(slot) => {
                        if let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                            c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                            c.read_closed |= ev.is_read_closed() || ev.is_error();
                            c.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        }
                    }
                }
            }
            if self.accept_more {
                self.accept_all();
            }
            if timer_fired {
                self.timer.acknowledge();
                self.spin_for_replies();
            }
            let now = clock::now_ns();
            self.service(now);
            self.watch_orphan(now);
        }
        for slot in 0..self.slots.len() {
            self.remove(slot);
        }
        self.hub.net
    }

    fn live_conns(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Starts stopping when asked: no more accepting or reading. Every session is told at once;
    /// it answers the frames it had received `shutting_down` and says `goodbye` once the answers
    /// it is owed have been queued (or half the flush time has passed), so `goodbye` is last.
    fn check_stop(&mut self, now: u64) {
        if !self.stopping && self.hub.status.stop.load(Ordering::SeqCst) {
            self.stopping = true;
            self.stop_started = now;
            self.stop_deadline = now.saturating_add(ns(self.cfg.flush_timeout));
            if let Some(mut l) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
            self.service(now);
        }
        if !self.stopping {
            return;
        }
        let mut changed = false;
        for c in self.slots.iter_mut().flatten() {
            if !c.shut {
                c.shut = true;
                c.session.shutdown(now);
                changed = true;
            }
        }
        if changed {
            self.service(now);
        }
    }

    /// Sets the timer to the next deadline; returns the poll timeout to use.
    fn arm(&mut self, now: u64) -> Option<std::time::Duration> {
        let at = self.next_deadline(now);
        if self.timer_ok && self.timer.set(at, now).is_ok() {
            return self.timer.poll_timeout(now);
        }
        self.timer_ok = false;
        at.map(|at| std::time::Duration::from_nanos(at.saturating_sub(now)))
    }

    fn next_deadline(&mut self, now: u64) -> Option<u64> {
        let mut at: Option<u64> = None;
        let mut earlier = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        let poll_iv = ns(self.cfg.telemetry_poll);
        let flush = ns(self.cfg.flush_timeout);
        for c in self.slots.iter_mut().flatten() {
            if let Some(t) = c.session.poll_at() {
                earlier(t);
            }
            if let Some(since) = c.closing_since {
                earlier(c.close_by(since, flush, ns(self.cfg.slow_consumer_timeout)));
            }
            if c.session.is_blocked() {
                earlier(now.saturating_add(poll_iv));
            }
            // Not while stopping: nothing is read then, and a byte arriving must not make the
            // loop spin (the flush waits on events and deadlines only).
            let more_to_read = !self.stopping && c.readable && !c.session.rx_space().is_empty();
            let more_to_write = c.writable && !c.session.tx_pending().is_empty();
            let newly_closed =
                c.session.state() >= SessionState::Closing && c.closing_since.is_none();
            if more_to_read || more_to_write || c.dead || newly_closed {
                earlier(now);
            }
        }
        if !self.hub.immediate.is_empty() || (self.accept_more && self.listener.is_some()) {
            earlier(now);
        }
        if self.hub.rt_waiting() || self.hub.held.is_some() {
            let margin = ns(self.cfg.wake_margin);
            // A prediction older than the safety interval means the audio thread is not being
            // called (stopped device, paused host): then only the safety net polls, instead of
            // waking once per projected period.
            let predicted = self.hub.net.next_callback_end_ns();
            earlier(reply_wake(predicted, now, margin, poll_iv));
        }
        // Even with nothing in flight, drain the reply queue now and then: transport telemetry
        // keeps arriving, and a full queue makes the audio side drop (and count) it.
        earlier(now.saturating_add(poll_iv.saturating_mul(IDLE_POLL_FACTOR)));
        if self.cfg.supervisor_pid.is_some() || self.cfg.watch_parent {
            earlier(self.next_orphan_check);
        }
        if self.stopping {
            earlier(self.stop_deadline);
            // The half-flush mark (when sessions stop waiting for owed answers) only while
            // ahead: once passed it would make every later pass poll with timeout 0.
            let half = self
                .stop_started
                .saturating_add(ns(self.cfg.flush_timeout) / 2);
            if half > now {
                earlier(half);
            }
        }
        at
    }

    /// Woken for replies: takes them as they arrive, spinning up to `reply_spin` while the
    /// audio callback still runs and answers are still owed.
    ///
    /// The spin polls the reply queue, whose write index the audio thread touches only when it
    /// pushes; `audio_in_callback` (a cache line written every callback, see its docs) and the
    /// clock are read only every [`SPIN_CHECK_EVERY`] rounds.
    fn spin_for_replies(&mut self) {
        if !self.hub.rt_waiting() {
            return;
        }
        let until = clock::now_ns().saturating_add(ns(self.cfg.reply_spin));
        let mut round: u32 = 0;
        loop {
            round = round.wrapping_add(1);
            if self.hub.held.is_some() || !Self::pump_rt(&mut self.slots, &mut self.hub) {
                return; // an owner has no room: the rest waits for its socket
            }
            if !self.hub.rt_waiting() {
                return;
            }
            if round.is_multiple_of(SPIN_CHECK_EVERY)
                && (!self.hub.net.audio_in_callback() || clock::now_ns() >= until)
            {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Accepts up to [`ACCEPTS_PER_PASS`] connections. `accept_more` stays set when the cap
    /// was reached (the next pass comes at once and goes on); it is cleared once the backlog is
    /// empty (`WouldBlock`) or accepting fails.
    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = &self.listener else {
                self.accept_more = false;
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.accept_more = false;
                    return;
                }
            }
        }
    }

    /// The connection to evict for a new one: the oldest that ended before OPEN and is only
    /// draining its error (a peer that failed its handshake and does not read would otherwise
    /// hold the slot for the flush time), else the oldest still waiting for its preface, else
    /// the oldest still waiting for `hello` (none holds anything a session is owed).
    fn eviction_victim(&self) -> Option<usize> {
        let rank = |c: &Conn| match c.session.state() {
            SessionState::Preface => Some(1),
            SessionState::Handshake => Some(2),
            SessionState::Open => None,
            SessionState::Closing | SessionState::Closed => (!c.session.was_open()).then_some(0),
        };
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
            .filter(|(_, c)| !c.dead)
            .filter_map(|(i, c)| Some((i, rank(c)?, c.accepted_at)))
            .min_by_key(|&(_, r, at)| (r, at))
            .map(|(i, _, _)| i)
    }

    /// Gives an accepted socket a session. When the half-open bound is reached or no slot is
    /// free, the oldest connection not yet OPEN (one that ended before OPEN first, then
    /// preface-waiting) is closed to make room: a newcomer always gets its chance, so idle,
    /// trickling or failed-handshake sockets cannot lock a client out (session.md §2). Only
    /// when every slot holds an OPEN connection or one closing after OPEN, or while stopping,
    /// is the new one closed at once.
    fn admit(&mut self, mut stream: TcpStream) {
        if self.stopping {
            bump(&self.hub.status.refused);
            return; // dropped: closed at once
        }
        let half_open = self
            .slots
            .iter()
            .flatten()
            .filter(|c| c.session.state() < SessionState::Open)
            .count();
        let free = self.slots.iter().position(Option::is_none);
        if half_open >= self.cfg.max_half_open || free.is_none() {
            let Some(victim) = self.eviction_victim() else {
                bump(&self.hub.status.refused);
                return;
            };
            // Counted before the close is visible to the evicted peer (tests read the stats
            // as soon as they see it).
            bump(&self.hub.status.evicted);
            self.remove(victim);
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            bump(&self.hub.status.refused);
            return;
        };
        let _ = stream.set_nodelay(true);
        let _ = timer::configure_accepted(&stream, self.cfg.socket_send_buffer);
        let now = clock::now_ns();
        let scfg = SessionConfig {
            max_frame: self.cfg.max_frame,
            handshake_timeout: ns(self.cfg.handshake_timeout),
            heartbeat_interval: ns(self.cfg.heartbeat_interval),
            heartbeat_timeout: ns(self.cfg.heartbeat_timeout),
            slow_consumer_timeout: ns(self.cfg.slow_consumer_timeout),
            token: self.cfg.token.as_deref().map(str::as_bytes),
            welcome: &self.welcome,
            // Issue 14: the engine room wires its taps and the attachment switch in here.
            taps: 0,
            attachments: false,
        };
        // A free slot always has a buffer pair: there are as many pairs as slots.
        let Some((rx, tx)) = self.buffers.pop() else {
            bump(&self.hub.status.refused);
            return;
        };
        let mut session = match Session::new(&scfg, rx, tx, now) {
            Ok(session) => session,
            Err(_) => return, // cannot happen: `validate` checked the sizes at spawn
        };
        session.set_flush_timeout(ns(self.cfg.flush_timeout));
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(slot), interest)
            .is_err()
        {
            self.buffers.push(session.into_buffers());
            return;
        }
        bump(&self.hub.status.accepted);
        let key = (u64::from(self.next_gen) << 32) | slot as u64;
        self.next_gen = self.next_gen.wrapping_add(1);
        self.slots[slot] = Some(Conn {
            stream: super::framelog::LoggedStream::new(
                stream,
                self.hub.status.frame_log.as_ref(),
                key,
            ),
            session,
            key,
            readable: true,
            read_closed: false,
            writable: true,
            closing_since: None,
            dead: false,
            shut: false,
            accepted_at: now,
            last_write: now,
        });
        // Read it now, before accepting more: a client whose preface and `hello` came with its
        // connection becomes OPEN (never evicted) even when a burst of others follows it in the
        // same accept pass. The same read the pass would make later (then `readable` is off).
        self.service_conn(slot, now);
    }

    fn conn_by_key(slots: &mut [Option<Conn>], key: u64) -> Option<&mut Conn> {
        let slot = (key & 0xffff_ffff) as usize;
        slots
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.key == key && !c.dead)
    }

    /// Queues an answer for its owner; a gone owner's answer is discarded (and counted). When
    /// the owner has no room, the answer goes to the holding cell and `false` is returned: stop
    /// taking answers until it is delivered.
    fn offer(slots: &mut [Option<Conn>], hub: &mut Hub, key: u64, id: u32, a: Answer) -> bool {
        let Some(c) = Self::conn_by_key(slots, key) else {
            bump(&hub.status.answers_discarded);
            return true;
        };
        let discarded = c.session.answers_discarded();
        match c.session.answer(id, a) {
            Ok(()) => {
                if c.session.answers_discarded() > discarded {
                    bump(&hub.status.answers_discarded); // after its goodbye: never sent
                }
                true
            }
            Err(a) => {
                bump(&hub.status.answers_held);
                hub.held = Some((key, id, a));
                false
            }
        }
    }

    /// Moves answers from the audio and control threads into their sessions, oldest first,
    /// stopping at the first one that does not fit (kept in the holding cell).
    fn pump(&mut self) {
        let hub = &mut self.hub;
        let slots = &mut self.slots;
        if let Some((k, id, a)) = hub.held.take() {
            let Some(c) = Self::conn_by_key(slots, k) else {
                bump(&hub.status.answers_discarded);
                return self.pump();
            };
            if let Err(a) = c.session.answer(id, a) {
                hub.held = Some((k, id, a)); // still no room; not counted again
                return;
            }
        }
        while let Some((k, id, a)) = hub.immediate.pop_front() {
            if !Self::offer(slots, hub, k, id, a) {
                return;
            }
        }
        loop {
            let (ticket, result) = match hub.control.try_recv() {
                Received::Reply(r) => r,
                Received::Empty => break,
                Received::Gone => {
                    if !Self::answer_control_gone(slots, hub) {
                        return;
                    }
                    break;
                }
            };
            let Some(i) = hub.control_owners.iter().position(|o| o.2 == ticket) else {
                continue; // a reply to nothing owed (`Orphaned`, a second reply): ignored
            };
            let Some((k, id, _)) = hub.control_owners.remove(i) else {
                continue;
            };
            let a = match result {
                Ok(()) => Answer::Ack { sample: None },
                Err(e) => Answer::Error {
                    code: e.code(),
                    detail: e.detail(),
                },
            };
            if !Self::offer(slots, hub, k, id, a) {
                return;
            }
        }
        Self::pump_rt(slots, hub);
    }

    /// Takes the audio thread's replies (up to [`REPLY_BUDGET`]). Once its endpoint is gone and
    /// every reply it queued is taken, answers what it still owed `audio_unavailable`. `false`
    /// when an answer went to the holding cell.
    fn pump_rt(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        // Read before draining: the audio side pushes nothing after it is dropped, so once the
        // queue is empty below, no reply is still to come.
        let gone = hub.audio_gone || hub.net.is_audio_gone();
        if gone && !hub.audio_gone {
            // Pairs with the release of the endpoint's drop: every reply it pushed is visible.
            std::sync::atomic::fence(Ordering::Acquire);
            hub.audio_gone = true;
        }
        for _ in 0..REPLY_BUDGET {
            let Some(reply) = hub.net.pop_reply() else {
                return !gone || Self::answer_audio_gone(slots, hub);
            };
            let (Some(id), Some(mut a)) = (reply.answers(), answer_of(reply)) else {
                if let RtReply::Transport(t) = reply {
                    hub.transport = t;
                }
                continue;
            };
            let Some((k, _, t)) = hub.rt_owners.pop_front() else {
                continue; // an answer nobody is owed: cannot happen with a well-behaved bridge
            };
            if let Answer::Pong { t_client_us, .. } = &mut a {
                *t_client_us = t;
            }
            if !Self::offer(slots, hub, k, id, a) {
                return false;
            }
        }
        true
    }

    /// Answers every control command still owed once the control endpoint is dropped.
    fn answer_control_gone(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        while let Some((k, id, _)) = hub.control_owners.pop_front() {
            let a = Answer::Error {
                code: crate::ErrorCode::ControlUnavailable,
                detail: "this engine has no control handler",
            };
            if !Self::offer(slots, hub, k, id, a) {
                return false;
            }
        }
        true
    }

    /// Answers every command the (dropped) audio thread still owed.
    fn answer_audio_gone(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        while let Some((k, id, _)) = hub.rt_owners.pop_front() {
            if !Self::offer(slots, hub, k, id, AUDIO_GONE) {
                return false;
            }
        }
        true
    }

    fn service(&mut self, now: u64) {
        // Fold the meter interval the audio thread completed, so `meters` frames are about one
        // callback old whatever their rate (one atomic load when nothing completed).
        self.hub.net.collect_meters();
        self.pump();
        for slot in 0..self.slots.len() {
            self.service_conn(slot, now);
        }
        self.pump();
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].as_mut() {
                write_out(c, now);
            }
            self.reap(slot, now);
        }
        if self.hub.controller.is_some() {
            self.hub.last_controller_ns = now;
        }
    }

    fn service_conn(&mut self, slot: usize, now: u64) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let mut routes = Routes {
            hub: &mut self.hub,
            key: c.key,
        };
        for _ in 0..ROUNDS {
            let mut progress = !self.stopping && read_in(c);
            c.session.poll(now, &mut routes);
            send_telemetry(c, routes.hub, now);
            progress |= write_out(c, now);
            if !progress || c.dead {
                break;
            }
        }
    }

    /// Closes a connection whose session is over once its bytes are out, or at once when the
    /// socket failed. `flush_timeout` after the session began closing it is closed regardless:
    /// that bounds both the wait for answers still owed after a `goodbye` (the session lingers
    /// in `Closing`) and the wait for the client to read; answers arriving later are discarded
    /// and counted. Exception ([`Conn::close_by`]): a half-closed session that owes nothing but
    /// bytes is kept while its client keeps reading (up to `slow_consumer_timeout` without
    /// progress).
    fn reap(&mut self, slot: usize, now: u64) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        if !c.dead && c.session.state() < SessionState::Closing {
            return;
        }
        let since = *c.closing_since.get_or_insert(now);
        let done = c.session.is_closed() && c.session.tx_pending().is_empty();
        let by = c.close_by(
            since,
            ns(self.cfg.flush_timeout),
            ns(self.cfg.slow_consumer_timeout),
        );
        if c.dead || done || now >= by {
            self.remove(slot);
        }
    }

    fn remove(&mut self, slot: usize) {
        let Some(mut c) = self.slots[slot].take() else {
            return;
        };
        if self.hub.controller == Some(c.key) {
            self.hub.controller = None;
            self.hub.last_controller_ns = clock::now_ns();
            self.hub
                .status
                .client_connected
                .store(false, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(Shutdown::Write);
        self.buffers.push(c.session.into_buffers());
        // Dropping the stream closes it. Answers still owed to it are discarded when they
        // arrive (its key no longer matches a live connection).
    }

    fn watch_orphan(&mut self, now: u64) {
        let Some(pid) = self
            .cfg
            .supervisor_pid
            .or(self.cfg.watch_parent.then_some(0))
        else {
            return;
        };
        if now >= self.next_orphan_check {
            self.next_orphan_check = now.saturating_add(ns(self.cfg.orphan_check));
            let gone = (pid != 0 && !timer::process_alive(pid))
                || (self.cfg.watch_parent && timer::parent_pid() != self.initial_ppid);
            if gone && self.supervisor_gone_at.is_none() {
                self.supervisor_gone_at = Some(now);
            }
        }
        let Some(gone_at) = self.supervisor_gone_at else {
            return;
        };
        let since = gone_at.max(self.hub.last_controller_ns);
        let grace_over = now >= since.saturating_add(ns(self.cfg.orphan_grace));
        if !self.orphan_reported && self.hub.controller.is_none() && grace_over {
            self.orphan_reported = true;
            self.orphaned.store(true, Ordering::Relaxed);
        }
        if self.orphan_reported && !self.orphan_delivered {
            let req = ControlRequest {
                id: 0,
                op: ControlOp::Orphaned,
                ticket: ControlTicket::NONE,
            };
            // Full: try again at the next check. Unavailable: the flag is all we can do.
            self.orphan_delivered = self.hub.control.try_send(req) != Err(SendFail::Full);
        }
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads what the session has room for; true when bytes arrived or the peer closed.
fn read_in(c: &mut Conn) -> bool {
    let mut progress = false;
    while c.readable {
        let space = c.session.rx_space();
        let space_len = space.len();
        if space_len == 0 {
            break;
        }
        match c.stream.read(space) {
            Ok(0) => {
                c.session.rx_eof();
                c.readable = false;
                return true;
            }
            Ok(n) => {
                // A short read drained the socket: with edge-triggered readiness, new bytes (or
                // a FIN) arriving later raise a new event, so the read that would only return
                // `WouldBlock` is skipped. Not when the event also said the peer closed: then
                // read on to the end of the stream. Linux only: mio's contract elsewhere is to
                // read until `WouldBlock` (on Windows readiness is re-armed only by it).
                let drained = cfg!(target_os = "linux") && n < space_len && !c.read_closed;
                c.session.rx_commit(n);
                progress = true;
                if drained {
                    c.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.session.rx_eof();
                c.readable = false;
                c.dead = true;
                return true;
            }
        }
    }
    progress
}

/// Writes pending bytes until the socket would block; true when some were written.
fn write_out(c: &mut Conn, now: u64) -> bool {
    let mut progress = false;
    while c.writable && !c.dead {
        let pending = c.session.tx_pending();
        if pending.is_empty() {
            break;
        }
        // std/mio send with MSG_NOSIGNAL on Linux (SO_NOSIGPIPE on macOS): a vanished peer is
        // an EPIPE error here, never a SIGPIPE.
        match c.stream.write(pending) {
            Ok(0) => c.dead = true,
            Ok(n) => {
                c.session.tx_consumed(n, now);
                c.last_write = now;
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => c.dead = true,
        }
    }
    progress
}

/// Sends the telemetry frames due on this session (built on the stack: no allocation).
fn send_telemetry(c: &mut Conn, hub: &mut Hub, now: u64) {
    let due = c.session.telemetry_due(now);
    for stream in due.iter() {
        match stream {
            Stream::Meters => {
                let n = hub.net.take_meters(&mut hub.peak, &mut hub.rms);
                if n > 0 {
                    hub.meter_n = n;
                }
                let n = hub.meter_n;
                let body = Meters {
                    peak: heapless::Vec::from_slice(&hub.peak[..n]).unwrap_or_default(),
                    rms: heapless::Vec::from_slice(&hub.rms[..n]).unwrap_or_default(),
                };
                c.session.send_telemetry(stream, &body, now);
            }
            Stream::Transport => {
                c.session.send_telemetry(stream, &hub.transport, now);
            }
            Stream::Health => {
                let h = hub.health(c.session.telemetry_shed());
                c.session.send_telemetry(stream, &h, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_wake_follows_the_prediction_and_retries_soon_when_the_callback_is_late() {
        const US: u64 = 1_000;
        let poll = 5_000 * US;
        let now = 1_000_000 * US;
        // On time: at the predicted end (plus margin).
        assert_eq!(
            reply_wake(Some(now + 300 * US), now, 0, poll),
            now + 300 * US
        );
        assert_eq!(
            reply_wake(Some(now + 300 * US), now, 50 * US, poll),
            now + 350 * US
        );
        // Late: the predicted end has passed without the answers. Look again in 25 µs, not a
        // whole period (2.67 ms) later, which is what projecting the prediction forward did.
        assert_eq!(
            reply_wake(Some(now - 100 * US), now, 0, poll),
            now + 25 * US
        );
        assert_eq!(
            reply_wake(Some(now - 10 * US), now, 50 * US, poll),
            now + 40 * US
        );
        // The audio thread stopped: only the safety net.
        assert_eq!(reply_wake(Some(now - 6_000 * US), now, 0, poll), now + poll);
        assert_eq!(reply_wake(None, now, 0, poll), now + poll);
        // Never later than the safety net.
        assert_eq!(reply_wake(Some(now + 9_000 * US), now, 0, poll), now + poll);
    }

    /// A worker on an ephemeral loopback port with its control endpoint and bridge ends.
    fn worker(
        cfg: ServerConfig,
    ) -> (
        Worker,
        std::net::SocketAddr,
        crate::control::ControlEndpoint,
        crate::rt::AudioEndpoint,
    ) {
        let (audio, net) = crate::rt::bridge(&crate::rt::RtConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let orphaned = Arc::new(AtomicBool::new(false));
        let (link, endpoint) = crate::control::control_route(4, waker, Arc::clone(&orphaned));
        let status = Arc::new(Status::default());
        let w = Worker::new(cfg, poll, listener, net, link, status, orphaned).unwrap();
        (w, addr, endpoint, audio)
    }

    /// One wake-up accepts at most `ACCEPTS_PER_PASS` connections; the rest are accepted on the
    /// next pass without a new readiness event (edge-triggered: nothing may be left behind).
    #[test]
    fn accepts_are_capped_per_pass_and_the_rest_follow() {
        let n = ACCEPTS_PER_PASS + 36;
        let cfg = ServerConfig {
            max_half_open: n + 8,
            ..ServerConfig::default()
        };
        let (mut w, addr, _control, _audio) = worker(cfg);
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50)); // all in the backlog
        w.accept_more = true; // what a listener event sets
        w.accept_all();
        assert_eq!(
            w.live_conns(),
            ACCEPTS_PER_PASS,
            "one pass accepts at most the cap"
        );
        assert!(w.accept_more, "more to accept: retried at the next pass");
        assert_eq!(
            w.next_deadline(clock::now_ns())
                .map(|t| t <= clock::now_ns()),
            Some(true)
        );
        w.accept_all();
        assert_eq!(w.live_conns(), n, "the rest accepted at the next pass");
        assert!(!w.accept_more, "backlog empty: wait for the next event");
        drop(clients);
    }

    /// A legitimate client in the backlog ahead of a burst of idle sockets (more than one
    /// accept pass, more than `max_half_open`): it is read as it is admitted, becomes OPEN and
    /// is not evicted by the sockets accepted after it in the same pass.
    #[test]
    fn a_client_ahead_of_a_burst_in_the_same_accept_pass_is_not_evicted() {
        use std::io::{Read as _, Write as _};
        let (mut w, addr, _control, _audio) = worker(ServerConfig::default());
        let mut legit = std::net::TcpStream::connect(addr).unwrap();
        legit.write_all(&crate::frame::PREFACE).unwrap();
        let hello = message::Hello {
            protocol: message::PROTOCOL_VERSION,
            client: heapless::String::try_from("test").unwrap(),
            token: None,
            attachments: false,
        };
        let mut buf = [0u8; 512];
        let n = message::encode_frame(Some(1), &hello, &mut buf, u32::MAX).unwrap();
        legit.write_all(&buf[..n]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let idle: Vec<_> = (0..ACCEPTS_PER_PASS + 8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50)); // all in the backlog
        w.accept_more = true;
        w.accept_all();
        w.service(clock::now_ns());
        assert!(w.hub.status.evicted.load(Ordering::Relaxed) >= 50);
        legit
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 64];
        let n = legit.read(&mut got).unwrap();
        assert!(n >= 8, "the legitimate client was closed (read {n} bytes)");
        assert!(w.hub.controller.is_some(), "it holds the session");
        drop(idle);
    }

    /// Woken while the callback still runs: the replies the audio thread already queued are
    /// taken as soon as they are there, not after the callback ends (nor after `reply_spin`).
    #[test]
    fn spin_takes_replies_as_they_arrive_while_the_callback_runs() {
        let cfg = ServerConfig {
            reply_spin: std::time::Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let (mut w, _addr, _control, mut audio) = worker(cfg);
        w.hub
            .net
            .try_send(RtCommand {
                id: 5,
                op: RtOp::Play,
            })
            .unwrap();
        w.hub.rt_owners.push_back((NOBODY, 5, None));
        audio.begin_callback(clock::now_ns(), 48);
        audio.drain(|_| crate::rt::Outcome::Applied); // answered; the callback goes on
        let t0 = std::time::Instant::now();
        w.spin_for_replies();
        let spun = t0.elapsed();
        assert_eq!(w.hub.net.commands_in_flight(), 0, "the answer was taken");
        assert!(
            spun < std::time::Duration::from_millis(100),
            "spun {spun:?} with the answer already queued"
        );
        audio.end_callback(clock::now_ns());
        // Negative control: owed an answer but no callback running, the spin stops at once.
        w.hub
            .net
            .try_send(RtCommand {
                id: 6,
                op: RtOp::Stop,
            })
            .unwrap();
        w.hub.rt_owners.push_back((NOBODY, 6, None));
        let t0 = std::time::Instant::now();
        w.spin_for_replies();
        assert_eq!(w.hub.net.commands_in_flight(), 1, "nothing to take yet");
        assert!(t0.elapsed() < std::time::Duration::from_millis(100));
    }
}
