//! The supervised session: one engine (spawned, or attached with `--connect`) and one client
//! connection, kept alive. If the engine dies it is restarted with backoff, within a budget of
//! [`RESTART_BUDGET`] restarts per [`RESTART_WINDOW`], and the session resumes: subscriptions
//! and the state the UI asked for (transport playing, parameters) are sent again to the new
//! instance.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientError, ClientOptions, Received};
use loophole_ipc::config::token_from_env;
use loophole_ipc::frame::write_frame;
use loophole_ipc::message::{
    AddNode, AnalysisMeta, Connect, Edge, Goodbye, Health, Message, ParamSet, Ping, Play,
    ServerMessage, Shutdown, Stop, Stream, Subscribe, SubscribeAnalysis, Welcome,
};
use serde_json::json;

use crate::engine::{fresh_token, EngineProcess, EngineSpec, StartError, Stopped};
use crate::report::Reporter;
use crate::sys;

/// Restarts allowed within [`RESTART_WINDOW`]; one more and aura gives up.
pub const RESTART_BUDGET: usize = 5;
/// The sliding window of the restart budget.
pub const RESTART_WINDOW: Duration = Duration::from_secs(180);
/// First restart delay; doubled for every restart still inside the window.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Send a ping when nothing was sent for this long (the engine drops silent clients).
const HEARTBEAT: Duration = Duration::from_millis(400);
/// How long connecting keeps trying while the engine refuses (the client's connect timeout).
const CONNECT_FOR: Duration = Duration::from_secs(5);
/// First id of raw commands (`aura send`), far from the client's own counter.
const RAW_ID_BASE: u32 = 0x4000_0000;

/// Which engine to talk to.
#[derive(Clone, Debug)]
pub enum Target {
    /// Spawn and supervise this engine.
    Spawn(EngineSpec),
    /// Attach to an engine started by hand, at the first of these addresses (those of one
    /// HOST:PORT, in resolution order) that accepts.
    Connect(Vec<SocketAddr>),
}

/// Why the session could not go on.
#[derive(Debug)]
pub enum LinkError {
    /// The engine could not be started.
    Start(StartError),
    /// Connecting to the engine at this address, or the handshake, failed.
    Connect(SocketAddr, ClientError),
    /// An attached engine (`--connect`) went away and reconnecting to its address failed.
    Reconnect(SocketAddr, ClientError),
    /// The engine died more than the budget allows.
    GaveUp {
        /// Deaths (spawned engine) or lost connections (attached engine) in the window.
        n: usize,
        /// Attached with `--connect`: connections lost, not engines restarted.
        attached: bool,
    },
    /// An attached engine went away and did not come back.
    Lost(String),
    /// aura's own set-up failed before any engine was involved (e.g. its environment).
    Setup(String),
    /// SIGINT/SIGTERM.
    Interrupted,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(e) => write!(f, "{e}"),
            Self::Connect(addr, e) => write_connect_error(f, *addr, e),
            Self::Reconnect(addr, e) => {
                f.write_str("lost the engine, and reconnecting failed: ")?;
                write_connect_error(f, *addr, e)
            }
            Self::GaveUp { n, attached } => write!(
                f,
                "{} {n} times within {} s; giving up (budget: {} {} per {} s)",
                if *attached {
                    "the connection to the attached engine was lost"
                } else {
                    "the engine died"
                },
                RESTART_WINDOW.as_secs(),
                RESTART_BUDGET,
                if *attached { "reconnects" } else { "restarts" },
                RESTART_WINDOW.as_secs()
            ),
            Self::Lost(why) => write!(f, "lost the engine: {why}"),
            Self::Setup(why) => f.write_str(why),
            Self::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// `cannot connect to the engine at ADDR: connection refused`, or the handshake's error with
/// the address.
fn write_connect_error(
    f: &mut fmt::Formatter<'_>,
    addr: SocketAddr,
    e: &ClientError,
) -> fmt::Result {
    match e {
        ClientError::Connect(kind) => write!(f, "cannot connect to the engine at {addr}: {kind}"),
        other => write!(f, "the engine at {addr}: {other}"),
    }
}

/// Something the session received.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // `ServerMessage` carries meters inline (no heap in the core)
pub enum Incoming {
    /// The answer to one of our commands.
    Answer {
        /// The command's id.
        id: u32,
        /// The command's name.
        name: String,
        /// `Ok(sample)` for `ack`/`pong`, `Err((code, message))` for `error`.
        result: Result<Option<u64>, (String, String)>,
        /// The answer was a `pong` (to a `ping`), not an `ack`.
        pong: bool,
        /// Command → answer, as seen here.
        latency: Duration,
    },
    /// A telemetry frame and when it arrived.
    Telemetry(ServerMessage, Instant),
    /// A `scope` or `spectrum` frame (its values from JSON or the attachment alike).
    Analysis(AnalysisMeta, Vec<f32>, Instant),
    /// The engine was restarted (or reconnected) and the session resumed (the new instance id
    /// is in the `session_resumed` event and [`Stats::instances`]).
    Resumed,
}

#[derive(Debug)]
struct Pending {
    name: String,
    sent: Instant,
    heartbeat: bool,
}

/// Counters for summaries.
#[derive(Debug, Default)]
pub struct Stats {
    /// Commands sent (heartbeat pings excluded).
    pub sent: u64,
    /// `ack` answers to them.
    pub acks: u64,
    /// `pong` answers to them (pings sent as commands; heartbeats are counted apart).
    pub pongs: u64,
    /// `error` answers to them.
    pub errors: u64,
    /// Commands whose answer was lost with a dead engine or connection.
    pub lost: u64,
    /// Heartbeat pings answered.
    pub heartbeats: u64,
    /// Command → answer latencies, µs.
    pub latencies_us: Vec<u64>,
    /// Telemetry frames per stream (meters, transport.state, engine.health).
    pub telemetry: [u64; 3],
    /// Engine restarts.
    pub restarts: u32,
    /// Every engine instance seen, in order.
    pub instances: Vec<String>,
    /// Xruns, telemetry dropped and shed, summed over finished instances.
    done: (u64, u64, u64),
    last_health: Option<Health>,
    /// Highest DSP load reported.
    pub dsp_load_max: f32,
}

impl Stats {
    /// Xruns, telemetry dropped by the audio thread, and telemetry shed by the network thread,
    /// over all engine instances.
    pub fn health_totals(&self) -> (u64, u64, u64) {
        let h = self.last_health.unwrap_or_default();
        (
            self.done.0 + h.xruns,
            self.done.1 + h.telemetry_dropped,
            self.done.2 + h.telemetry_shed,
        )
    }

    fn fold_health(&mut self) {
        let t = self.health_totals();
        self.done = t;
        self.last_health = None;
    }
}

/// The supervised session.
pub struct Link {
    target: Target,
    report: Reporter,
    token: Option<String>,
    engine: Option<EngineProcess>,
    client: Client,
    pending: HashMap<u32, Pending>,
    subs: Vec<(Stream, u16)>,
    /// `scope`/`spectrum` subscriptions, re-sent on resume like `subs`.
    analysis_subs: Vec<SubscribeAnalysis>,
    playing: Option<bool>,
    params: BTreeMap<(u32, u32), f32>,
    /// Graph edits made through [`add_node`](Self::add_node) / [`connect`](Self::connect), in
    /// order: replayed to a new engine instance, not to the same engine reached again. They are
    /// sent before the parameters, but take another route (control thread, not audio thread),
    /// so a parameter of an added node may still be applied first and refused.
    graph: Vec<GraphEdit>,
    restarts: VecDeque<Instant>,
    last_sent: Instant,
    next_raw: u32,
    /// `engine.shutdown` was sent: the engine's goodbye is expected, not a failure.
    shutdown_sent: bool,
    /// The engine ended the session as asked; nothing more will arrive.
    ended: bool,
    /// Counters.
    pub stats: Stats,
}

impl Link {
    /// Starts (or attaches to) the engine and opens the session.
    pub fn open(target: Target, report: Reporter) -> Result<Self, LinkError> {
        let token = match &target {
            Target::Spawn(_) => Some(fresh_token().map_err(|e| {
                LinkError::Lost(format!("cannot read /dev/urandom for a token: {e}"))
            })?),
            Target::Connect(_) => {
                token_from_env().map_err(|e| LinkError::Setup(format!("cannot start: {e}")))?
            }
        };
        let (engine, client) = connect(&target, token.as_deref(), report, 0)?;
        let mut stats = Stats::default();
        stats.instances.push(client.instance().to_owned());
        Ok(Self {
            target,
            report,
            token,
            engine,
            client,
            pending: HashMap::new(),
            subs: Vec::new(),
            analysis_subs: Vec::new(),
            playing: None,
            params: BTreeMap::new(),
            graph: Vec::new(),
            restarts: VecDeque::new(),
            last_sent: Instant::now(),
            next_raw: RAW_ID_BASE,
            shutdown_sent: false,
            ended: false,
            stats,
        })
    }

    /// The engine's `welcome`.
    pub fn welcome(&self) -> &Welcome {
        self.client.welcome()
    }

    /// Commands sent whose answer has not arrived (heartbeats excluded).
    pub fn outstanding(&self) -> usize {
        self.pending.values().filter(|p| !p.heartbeat).count()
    }

    /// Sends a command (restarting the engine first if the connection is dead). Returns its id.
    pub fn send<M: Message>(&mut self, body: &M) -> Result<u32, LinkError> {
        self.send_tracked(body, false)
    }

    fn send_tracked<M: Message>(&mut self, body: &M, heartbeat: bool) -> Result<u32, LinkError> {
        loop {
            match self.client.send(body) {
                Ok(id) => {
                    self.track(id, M::NAME.to_owned(), heartbeat);
                    return Ok(id);
                }
                Err(e) => self.recover(&format!("sending {} failed: {e}", M::NAME))?,
            }
        }
    }

    fn track(&mut self, id: u32, name: String, heartbeat: bool) {
        let now = Instant::now();
        self.shutdown_sent |= name == Shutdown::NAME;
        self.pending.insert(
            id,
            Pending {
                name,
                sent: now,
                heartbeat,
            },
        );
        self.stats.sent += u64::from(!heartbeat);
        self.last_sent = now;
    }

    /// Sends a command given by name and JSON body text, as is (the engine judges it).
    pub fn send_raw(&mut self, name: &str, body_json: &str) -> Result<u32, LinkError> {
        let id = self.next_raw;
        self.next_raw += 1;
        let payload = format!(
            "{{\"type\":\"command\",\"name\":{},\"id\":{id},\"body\":{body_json}}}",
            json!(name)
        );
        let mut frame = vec![0u8; payload.len() + 8];
        let n = write_frame(&mut frame, u32::MAX, |out| {
            out[..payload.len()].copy_from_slice(payload.as_bytes());
            Ok(payload.len())
        })
        .map_err(|e| LinkError::Lost(format!("cannot frame the command: {e}")))?;
        if let Err(e) = self.client.send_raw(&frame[..n]) {
            return Err(LinkError::Lost(format!("sending failed: {e}")));
        }
        self.track(id, name.to_owned(), false);
        Ok(id)
    }

    /// `transport.play`, remembered so a restarted engine plays again.
    pub fn play(&mut self) -> Result<u32, LinkError> {
        self.playing = Some(true);
        self.send(&Play {})
    }

    /// `transport.stop`, remembered.
    pub fn stop(&mut self) -> Result<u32, LinkError> {
        self.playing = Some(false);
        self.send(&Stop {})
    }

    /// `graph.add_node`, remembered for a restarted engine.
    pub fn add_node(&mut self, body: AddNode) -> Result<u32, LinkError> {
        self.graph.push(GraphEdit::AddNode(body.clone()));
        self.send(&body)
    }

    /// `graph.connect`, remembered for a restarted engine.
    pub fn connect(&mut self, edge: Edge) -> Result<u32, LinkError> {
        self.graph.push(GraphEdit::Connect(edge));
        self.send(&Connect(edge))
    }

    /// `param.set`, remembered (the target value).
    pub fn set_param(
        &mut self,
        node: u32,
        param: u32,
        value: f32,
        ramp_ms: f32,
    ) -> Result<u32, LinkError> {
        self.params.insert((node, param), value);
        let ramp_ms = (ramp_ms > 0.0).then_some(ramp_ms);
        self.send(&ParamSet {
            node,
            param,
            value,
            ramp_ms,
        })
    }

    /// `telemetry.subscribe`, remembered (subscriptions belong to the session).
    pub fn subscribe(&mut self, stream: Stream, rate_hz: u16) -> Result<u32, LinkError> {
        self.subs.retain(|(s, _)| *s != stream);
        self.subs.push((stream, rate_hz));
        self.send(&Subscribe { stream, rate_hz })
    }

    /// `telemetry.subscribe` of `scope` or `spectrum`, remembered per (stream, tap) like
    /// [`subscribe`](Self::subscribe).
    pub fn subscribe_analysis(&mut self, sub: SubscribeAnalysis) -> Result<u32, LinkError> {
        self.analysis_subs
            .retain(|s| (s.stream, s.tap) != (sub.stream, sub.tap));
        self.analysis_subs.push(sub);
        self.send(&sub)
    }

    /// Receives until `until`, appending to `out`; keeps the session alive (heartbeats) and
    /// restarts a dead engine on the way.
    pub fn poll(&mut self, until: Instant, out: &mut Vec<Incoming>) -> Result<(), LinkError> {
        loop {
            if sys::stop_requested() {
                return Err(LinkError::Interrupted);
            }
            let now = Instant::now();
            if now >= until || self.ended {
                return Ok(());
            }
            if now.duration_since(self.last_sent) >= HEARTBEAT {
                self.heartbeat()?;
            }
            self.check_unanswered(out)?;
            let wait = until.duration_since(now).min(Duration::from_millis(50));
            match self.client.recv_timeout(wait) {
                Ok(Some(r)) => self.handle(r, out)?,
                Ok(None) => self.check_engine(out)?,
                Err(_) if self.shutdown_sent => self.ended = true,
                Err(e) => {
                    self.recover(&format!("connection lost: {e}"))?;
                    self.resumed(out);
                }
            }
        }
    }

    /// Sends `body` and waits up to `timeout` for its answer.
    pub fn request<M: Message>(
        &mut self,
        body: &M,
        timeout: Duration,
        out: &mut Vec<Incoming>,
    ) -> Result<Option<Incoming>, LinkError> {
        let id = self.send(body)?;
        self.wait_answer(id, timeout, out)
    }

    /// Waits up to `timeout` for the answer to `id`; other arrivals go to `out`. `None` on
    /// timeout or when the answer was lost with the engine.
    pub fn wait_answer(
        &mut self,
        id: u32,
        timeout: Duration,
        out: &mut Vec<Incoming>,
    ) -> Result<Option<Incoming>, LinkError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.pending.contains_key(&id) {
            let mut got = Vec::new();
            self.poll(Instant::now() + Duration::from_millis(20), &mut got)?;
            for inc in got {
                match inc {
                    Incoming::Answer { id: a, .. } if a == id => return Ok(Some(inc)),
                    other => out.push(other),
                }
            }
        }
        Ok(None)
    }

    fn heartbeat(&mut self) -> Result<(), LinkError> {
        let ping = Ping {
            nonce: 0,
            t_client_us: None,
            rt: false,
        };
        self.send_tracked(&ping, true).map(|_| ())
    }

    /// An engine that leaves a command unanswered past its own timeout is considered gone.
    fn check_unanswered(&mut self, out: &mut Vec<Incoming>) -> Result<(), LinkError> {
        let limit = Duration::from_millis(u64::from(self.welcome().timeout_ms.max(1_000)));
        let late = self.pending.values().any(|p| p.sent.elapsed() > limit);
        if late {
            self.recover(&format!("no answer for {} ms", limit.as_millis()))?;
            self.resumed(out);
        }
        Ok(())
    }

    fn check_engine(&mut self, out: &mut Vec<Incoming>) -> Result<(), LinkError> {
        let exited = self.engine.as_mut().and_then(EngineProcess::try_exited);
        if exited.is_some() && self.shutdown_sent {
            self.ended = true;
        } else if let Some(status) = exited {
            self.recover(&format!("the engine exited ({status})"))?;
            self.resumed(out);
        }
        Ok(())
    }

    fn resumed(&self, out: &mut Vec<Incoming>) {
        out.push(Incoming::Resumed);
    }

    fn handle(&mut self, r: Received, out: &mut Vec<Incoming>) -> Result<(), LinkError> {
        if let Some(p) = r.reference.and_then(|id| self.pending.remove(&id)) {
            self.answer(r.reference.unwrap_or_default(), p, r.message, out);
            return Ok(());
        }
        let now = Instant::now();
        match r.message {
            ServerMessage::Goodbye(_) if self.shutdown_sent => self.ended = true,
            ServerMessage::Goodbye(g) => {
                self.recover(&format!("the engine said goodbye ({:?})", g.reason))?;
                self.resumed(out);
            }
            ServerMessage::Log(l) => eprintln!("aura: engine log ({:?}): {}", l.level, l.message),
            ServerMessage::Health(h) => {
                self.stats.telemetry[2] += 1;
                self.stats.dsp_load_max = self.stats.dsp_load_max.max(h.dsp_load);
                self.stats.last_health = Some(h);
                out.push(Incoming::Telemetry(r.message, now));
            }
            ServerMessage::Meters(_) => {
                self.stats.telemetry[0] += 1;
                out.push(Incoming::Telemetry(r.message, now));
            }
            ServerMessage::Transport(_) => {
                self.stats.telemetry[1] += 1;
                out.push(Incoming::Telemetry(r.message, now));
            }
            ServerMessage::Analysis(m) => out.push(Incoming::Analysis(m, r.values, now)),
            _ => {}
        }
        Ok(())
    }

    fn answer(&mut self, id: u32, p: Pending, msg: ServerMessage, out: &mut Vec<Incoming>) {
        let latency = p.sent.elapsed();
        let pong = matches!(msg, ServerMessage::Pong(_));
        let result = match msg {
            ServerMessage::Ack(a) => Ok(a.sample),
            ServerMessage::Pong(pong) => Ok(pong.sample),
            ServerMessage::Error(e) => {
                Err((e.code.as_str().to_owned(), e.message.as_str().to_owned()))
            }
            other => Err(("unexpected".to_owned(), format!("{other:?}"))),
        };
        if p.heartbeat {
            self.stats.heartbeats += 1;
            return;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.stats.latencies_us.push(us);
        let instance = self.client.instance().to_owned();
        match &result {
            Ok(sample) => {
                if pong {
                    self.stats.pongs += 1;
                } else {
                    self.stats.acks += 1;
                }
                self.report.event(
                    if pong { "pong" } else { "ack" },
                    json!({"id": id, "name": p.name, "instance": instance, "latency_us": us,
                           "sample": sample}),
                    None,
                );
            }
            Err((code, message)) => {
                self.stats.errors += 1;
                self.report.event(
                    "error",
                    json!({"id": id, "name": p.name, "instance": instance, "code": code,
                           "message": message}),
                    Some(format!("{} (id {id}) refused: {code}: {message}", p.name)),
                );
            }
        }
        out.push(Incoming::Answer {
            id,
            name: p.name,
            result,
            pong,
            latency,
        });
    }

    /// The connection is gone: restart (or reconnect) and resume, within the budget.
    fn recover(&mut self, why: &str) -> Result<(), LinkError> {
        if sys::stop_requested() {
            return Err(LinkError::Interrupted);
        }
        let previous = self.client.instance().to_owned();
        let lost: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.heartbeat)
            .map(|(id, _)| *id)
            .collect();
        self.stats.lost += lost.len() as u64;
        self.pending.clear();
        self.stats.fold_health();
        self.report.event(
            "connection_lost",
            json!({"reason": why, "instance": previous, "lost_commands": lost}),
            Some(format!("{why}; {} command answer(s) lost", lost.len())),
        );
        self.reap_engine();
        loop {
            self.restart_once()?;
            if self.resume().is_ok() {
                break;
            }
        }
        let instance = self.client.instance().to_owned();
        self.stats.instances.push(instance.clone());
        self.report.event(
            "session_resumed",
            json!({"instance": instance, "previous_instance": previous,
                   "new_engine": instance != previous,
                   "resubscribed": self.subs.len(), "restored_params": self.params.len(),
                   "playing": self.playing}),
            Some(format!(
                "session resumed with engine instance {instance}{}",
                if instance != previous {
                    " (a new engine: state re-sent)"
                } else {
                    ""
                }
            )),
        );
        Ok(())
    }

    /// Collects the dead (or hung) engine's exit status, killing it if it still runs.
    fn reap_engine(&mut self) {
        let Some(mut engine) = self.engine.take() else {
            return;
        };
        let pid = engine.pid();
        let how = match engine.wait_exit(Duration::from_millis(300)) {
            Some(s) => s.to_string(),
            None => engine.stop(Duration::ZERO).to_string(),
        };
        self.report.event(
            "engine_exited",
            json!({"pid": pid, "status": how}),
            Some(format!("engine (pid {pid}) {how}")),
        );
    }

    /// One restart attempt after the backoff; counts against the budget.
    fn restart_once(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= RESTART_BUDGET {
            let n = self.restarts.len() + 1;
            self.report
                .event("gave_up", json!({"deaths_in_window": n}), None);
            let attached = matches!(self.target, Target::Connect(_));
            return Err(LinkError::GaveUp { n, attached });
        }
        let backoff = BACKOFF_BASE * (1 << self.restarts.len());
        let attempt = self.restarts.len() + 1;
        let ms = backoff.as_millis() as u64;
        match &self.target {
            // An attached engine is not ours to restart: aura reconnects to its address.
            Target::Connect(addrs) => {
                let addr = addrs_text(addrs);
                self.report.event(
                    "reconnecting",
                    json!({"attempt": attempt, "backoff_ms": ms, "addr": addr,
                       "for_ms": CONNECT_FOR.as_millis() as u64}),
                    Some(format!(
                        "reconnecting to {addr} in {ms} ms (trying for {} s; an attached engine \
                     is not restarted)",
                        CONNECT_FOR.as_secs()
                    )),
                )
            }
            Target::Spawn(_) => self.report.event(
                "restarting",
                json!({"attempt": attempt, "backoff_ms": ms}),
                Some(format!("restarting the engine in {ms} ms")),
            ),
        }
        sleep_interruptible(backoff)?;
        self.restarts.push_back(Instant::now());
        self.stats.restarts += 1;
        match connect(
            &self.target,
            self.token.as_deref(),
            self.report,
            self.stats.restarts,
        ) {
            Ok((engine, client)) => {
                self.engine = engine;
                self.client = client;
                self.last_sent = Instant::now();
                Ok(())
            }
            Err(LinkError::Start(e)) => {
                self.report.event(
                    "start_failed",
                    json!({"message": e.to_string()}),
                    Some(format!("the engine did not start: {e}")),
                );
                self.restart_once()
            }
            Err(LinkError::Connect(addr, e)) if matches!(self.target, Target::Connect(_)) => {
                Err(LinkError::Reconnect(addr, e))
            }
            Err(e) => {
                self.report.event(
                    "start_failed",
                    json!({"message": e.to_string()}),
                    Some(format!("could not connect to the new engine: {e}")),
                );
                self.restart_once()
            }
        }
    }

    /// Re-sends subscriptions and the remembered state to the (new) engine.
    fn resume(&mut self) -> Result<(), ClientError> {
        let subs = self.subs.clone();
        for (stream, rate_hz) in subs {
            let id = self.client.send(&Subscribe { stream, rate_hz })?;
            self.track(id, Subscribe::NAME.to_owned(), false);
        }
        let analysis = self.analysis_subs.clone();
        let taps = self.welcome().taps;
        for sub in analysis.into_iter().filter(|s| s.tap < taps) {
            let id = self.client.send(&sub)?;
            self.track(id, SubscribeAnalysis::NAME.to_owned(), false);
        }
        if self.stats.instances.last().map(String::as_str) != Some(self.client.instance()) {
            for edit in self.graph.clone() {
                let (id, name) = match edit {
                    GraphEdit::AddNode(b) => (self.client.send(&b)?, AddNode::NAME),
                    GraphEdit::Connect(e) => (self.client.send(&Connect(e))?, Connect::NAME),
                };
                self.track(id, name.to_owned(), false);
            }
        }
        let params: Vec<_> = self.params.iter().map(|(k, v)| (*k, *v)).collect();
        for ((node, param), value) in params {
            let body = ParamSet {
                node,
                param,
                value,
                ramp_ms: None,
            };
            let id = self.client.send(&body)?;
            self.track(id, ParamSet::NAME.to_owned(), false);
        }
        if let Some(playing) = self.playing {
            let id = if playing {
                self.client.send(&Play {})?
            } else {
                self.client.send(&Stop {})?
            };
            let name = if playing { Play::NAME } else { Stop::NAME };
            self.track(id, name.to_owned(), false);
        }
        Ok(())
    }

    /// Ends the session politely. A spawned engine gets `engine.shutdown` (then SIGTERM, then
    /// SIGKILL if it does not exit); an attached one gets `goodbye`.
    pub fn close(mut self) {
        let spawned = self.engine.is_some();
        let sent = if self.ended {
            Err(ClientError::Closed)
        } else if spawned {
            self.client.send(&Shutdown {})
        } else {
            self.client.send(&Goodbye {})
        };
        if let Ok(id) = sent {
            self.track(
                id,
                if spawned {
                    Shutdown::NAME
                } else {
                    Goodbye::NAME
                }
                .to_owned(),
                false,
            );
            self.await_close(id);
        }
        if let Some(mut engine) = self.engine.take() {
            let pid = engine.pid();
            let stopped = engine.stop(Duration::from_secs(2));
            let asked = self.shutdown_sent;
            let text = match stopped {
                // It did what aura asked, with no signal needed.
                Stopped::Exited(s) if asked => {
                    format!("exited after the engine.shutdown aura asked for ({s})")
                }
                other => other.to_string(),
            };
            // `how` keeps its words ("exited by itself ...": no signal was needed), which
            // scripts and tests match; `shutdown_sent` says whether aura had asked.
            self.report.event(
                "engine_stopped",
                json!({"pid": pid, "how": stopped.to_string(), "shutdown_sent": asked}),
                Some(format!("engine (pid {pid}) {text}")),
            );
        }
    }

    /// Reads until the answer to `id` and the close (at most 1.5 s).
    fn await_close(&mut self, id: u32) {
        let deadline = Instant::now() + Duration::from_millis(1_500);
        while Instant::now() < deadline {
            match self.client.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(r)) if r.reference == Some(id) => {
                    if let Some(p) = self.pending.remove(&id) {
                        self.answer(id, p, r.message, &mut Vec::new());
                    }
                }
                Ok(Some(Received {
                    message: ServerMessage::Goodbye(_),
                    ..
                })) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// Starts the engine (spawn mode) and connects with the handshake.
fn connect(
    target: &Target,
    token: Option<&str>,
    report: Reporter,
    restart: u32,
) -> Result<(Option<EngineProcess>, Client), LinkError> {
    let mut opts = ClientOptions::default();
    opts.name = concat!("aura-example/", env!("CARGO_PKG_VERSION")).to_owned();
    opts.token = token.map(str::to_owned);
    opts.connect_timeout = CONNECT_FOR;
    // `scope`/`spectrum` values as raw f32 after the envelope (the client decodes both forms).
    opts.attachments = true;
    let (engine, addr) = match target {
        Target::Spawn(spec) => {
            let engine =
                EngineProcess::spawn(spec, token.unwrap_or_default()).map_err(LinkError::Start)?;
            let a = engine.announcement().clone();
            let addr = a.addr().map_err(|e| LinkError::Lost(e.to_string()))?;
            report.event(
                "engine_started",
                json!({"pid": a.pid, "instance": a.instance.as_str(), "host": a.host.as_str(),
                       "port": a.port, "restart": restart}),
                Some(format!(
                    "engine started: pid {}, listening on {addr}, instance {}",
                    a.pid, a.instance
                )),
            );
            (Some(engine), addr)
        }
        Target::Connect(addrs) => return Ok((None, connect_first(addrs, &opts)?)),
    };
    let client = Client::connect(addr, &opts).map_err(|e| LinkError::Connect(addr, e))?;
    if let Some(e) = &engine {
        if e.announcement().instance.as_str() != client.instance() {
            eprintln!("aura: warning: welcome.instance differs from the announcement's");
        }
    }
    let w = client.welcome();
    report.event(
        "connected",
        json!({"instance": w.instance.as_str(), "engine": w.engine.as_str(),
               "sample_rate": w.sample_rate, "block_size": w.block_size,
               "heartbeat_ms": w.heartbeat_ms}),
        Some(format!(
            "connected to {} (instance {}), {} Hz, {} frames/block",
            w.engine, w.instance, w.sample_rate, w.block_size
        )),
    );
    Ok((engine, client))
}

fn sleep_interruptible(d: Duration) -> Result<(), LinkError> {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if sys::stop_requested() {
            return Err(LinkError::Interrupted);
        }
        std::thread::sleep(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    Ok(())
}

/// The first of `addrs` where a session opens, within one [`CONNECT_FOR`] for all of them:
/// round by round, each address gets one short attempt; any connection failure passes to the
/// next address (`::1` may be unreachable while 127.0.0.1 listens), any other failure (a
/// refused `hello`) is the answer. `addrs` is not empty.
fn connect_first(addrs: &[SocketAddr], opts: &ClientOptions) -> Result<Client, LinkError> {
    let deadline = Instant::now() + opts.connect_timeout;
    let mut once = opts.clone();
    once.connect_timeout = ADDRESS_ATTEMPT;
    loop {
        let mut last = None;
        for &addr in addrs {
            match Client::connect(addr, &once) {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::Connect(_)) => last = Some(LinkError::Connect(addr, e)),
                Err(e) => return Err(LinkError::Connect(addr, e)),
            }
        }
        if Instant::now() >= deadline {
            return Err(last.unwrap_or_else(|| LinkError::Setup("--connect: no address".into())));
        }
    }
}

/// How long one address of `--connect` is tried per round before the next (connect retries
/// with backoff inside it).
const ADDRESS_ATTEMPT: Duration = Duration::from_millis(100);

/// `a`, or `a or b` for the addresses of one HOST:PORT.
fn addrs_text(addrs: &[SocketAddr]) -> String {
    let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    all.join(" or ")
}

/// A graph edit [`Link`] remembers.
#[derive(Clone)]
enum GraphEdit {
    AddNode(AddNode),
    Connect(Edge),
}
