//! The event loop of the network thread, in rooms.
//!
//! One pass: wait (epoll, deadlines in a timerfd) → accept → take replies from the audio and
//! control threads → for each connection read, let the session process frames, send due
//! telemetry, write → close what is finished. Every loop is bounded.
//!
//! | room | concern |
//! |---|---|
//! | this file | the [`Worker`]'s state, its construction and the loop |
//! | `admit` | accepting, admission and the half-open (eviction) policy |
//! | `conn` | one connection: read, write, service, reap, remove |
//! | `hub` | routing commands to the audio and control threads |
//! | `reply` | routing answers back to their sessions (the holding cell) |
//! | `wake` | the next deadline, the wake-up prediction and the reply spin |
//! | `telemetry` | telemetry frames and `engine.health` bodies |
//! | `stop` | shutdown and the orphan watch |
//!
//! Each room adds an `impl Worker` block (or free functions); none imports from `net/mod.rs`.

mod admit;
mod conn;
mod hub;
mod reply;
mod stop;
mod telemetry;
#[cfg(test)]
mod tests;
mod wake;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::clock;
use crate::config::ServerConfig;
use crate::control::ControlLink;
use crate::message::{self, Welcome};
use crate::net::analysis::AnalysisHub;
use crate::net::framelog;
use crate::net::sys::{self as timer, Timer};
use crate::rt::{NetEndpoint, MAX_METER_CHANNELS};
use crate::session::Session;
use conn::{write_out, Conn};
use hub::Hub;

/// Token of the listener.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the waker (shutdown, control replies).
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// Token of the deadline timer.
const TIMER: Token = Token(usize::MAX - 3);

/// Read/poll/write rounds per connection per pass (then the next pass comes at once).
const ROUNDS: usize = 8;
/// Owner of the answers a previous server on the same bridge was still owed: its slot part is
/// out of range, so it never matches a connection and those answers are discarded (and counted).
const NOBODY: u64 = u64::MAX;
/// Connection slots beyond `max_half_open`: the controlling client and a few that are closing.
const EXTRA_SLOTS: usize = 4;

type Sess = Session<Box<[u8]>, Box<[u8]>>;

/// Flags shared between the handle and the thread.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) stop: AtomicBool,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) answers_discarded: AtomicU64,
    pub(crate) answers_held: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) client_connected: AtomicBool,
    /// The frame log's handle for the network thread (`None`: off).
    pub(crate) frame_log: Option<framelog::Tap>,
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
    /// `welcome.taps`: the engine's taps when it has an analysis worker, else 0.
    analysis_taps: u16,
    /// The listener may have connections waiting: the previous pass stopped at
    /// [`admit::ACCEPTS_PER_PASS`] (the listener is edge-triggered, no new event will come for them).
    accept_more: bool,
    /// Accepted sockets inherit `TCP_NODELAY` from the listener (`sys::configure_listener`).
    nodelay_inherited: bool,
    /// The audio callback's predicted end when this pass began (see `wake::note_pass_start`).
    pass_prediction: Option<u64>,
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

pub(super) fn ns(d: std::time::Duration) -> u64 {
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
        let nodelay_inherited = timer::configure_listener(&listener);
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
        // Every answer owed at once can wait in the holding cell: audio, control, immediate.
        let held_capacity = rt_owners.capacity() + control_limit + hub::IMMEDIATE_CAPACITY;
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
            analysis_taps: 0,
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
                immediate: VecDeque::with_capacity(hub::IMMEDIATE_CAPACITY),
                held: VecDeque::with_capacity(held_capacity),
                transport: crate::rt::TransportState::default(),
                peak: [0.0; MAX_METER_CHANNELS],
                rms: [0.0; MAX_METER_CHANNELS],
                meter_n: 0,
                dsp_load_max: 0.0,
                status,
                analysis: None,
            },
            accept_more: false,
            nodelay_inherited,
            pass_prediction: None,
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

    /// Turns the analysis streams on (before [`run`](Self::run)): `welcome.taps` = `taps`, and
    /// the sessions' `scope`/`spectrum` frames come from `hub`'s mailboxes.
    pub(crate) fn set_analysis(&mut self, hub: AnalysisHub, taps: u16) {
        self.hub.analysis = Some(hub);
        self.analysis_taps = taps;
    }

    /// The thread body. Returns when stopped and flushed (or the flush timeout passed), giving
    /// the bridge endpoint back.
    pub(crate) fn run(mut self) -> NetEndpoint {
        // Timers of this thread fire within ~1 ns of their deadline instead of the default
        // 50 µs slack: the wake after the audio callback is only `wake_margin` late.
        let _ = timer::set_timer_slack_1ns();
        // A short scheduler slice (Linux, SCHED_OTHER only; nice and policy kept): that wake
        // also preempts a busy task on this CPU sooner.
        let _ = timer::request_short_slice();
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
            self.note_pass_start();
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

    /// Whether `slot` holds a connection other than the controlling one with bytes to read.
    fn is_other_readable(&self, slot: usize) -> bool {
        self.slots[slot]
            .as_ref()
            .is_some_and(|c| c.readable && Some(c.key) != self.hub.controller)
    }

    fn live_conns(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn service(&mut self, now: u64) {
        // Fold the meter interval the audio thread completed, so `meters` frames are about one
        // callback old whatever their rate (one atomic load when nothing completed).
        self.hub.net.collect_meters();
        self.pump();
        self.reconcile_analysis();
        for slot in 0..self.slots.len() {
            let other_read = self.is_other_readable(slot);
            self.service_conn(slot, now);
            if other_read {
                // Another connection's read (a refused client's `hello`, garbage) may have
                // taken a while: the controlling client's bytes first, before the next one.
                self.serve_controller_now();
            }
        }
        self.pump();
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].as_mut() {
                write_out(c, now);
            }
            let present = self.slots[slot].is_some();
            self.reap(slot, now);
            if present && self.slots[slot].is_none() {
                self.serve_controller_now(); // after a close, as after an admission
            }
        }
        if self.hub.controller.is_some() {
            self.hub.last_controller_ns = now;
        }
    }
}

pub(super) fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
