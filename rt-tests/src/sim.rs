//! A simulated audio thread driving the real `AudioEndpoint` while a simulated network thread
//! goes through every hostile phase: normal traffic, command flood, flood without reading
//! replies, slow reading, pause ("client disconnected"), resume ("reconnected"), and finally
//! dropping its `NetEndpoint` while the audio thread keeps running.

use crate::tap_sim::{self, TapReport, TapSim};
use crate::{seccomp, thread_allocs};
use loophole_ipc::rt::{
    bridge, AudioEndpoint, NetEndpoint, Outcome, RejectReason, RtCommand, RtConfig, RtOp, RtReply,
    TransportState,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames per simulated block and the metered channel count.
pub const FRAMES: usize = 64;
/// Channels metered every callback.
pub const CHANNELS: usize = 64;
const PHASES: u64 = 8;

/// How to run the simulation.
pub struct SimOptions {
    /// Callbacks the audio thread runs (measured section).
    pub callbacks: u64,
    /// Bridge configuration.
    pub cfg: RtConfig,
    /// Install the seccomp filter on the audio thread before the measured section.
    pub seccomp: bool,
    /// Wait 20 µs every this many callbacks to give the network thread room, like a real
    /// driver waiting for the next period (a sleep; under seccomp a spin on the clock).
    pub sleep_every: u64,
    /// Taps published every callback and read by a third thread (see [`tap_sim`]).
    pub taps: TapSim,
}

impl Default for SimOptions {
    fn default() -> Self {
        let mut cfg = RtConfig::default();
        cfg.command_capacity = 64;
        cfg.reply_capacity = 40;
        cfg.drain_budget = 16;
        cfg.meter_channels = CHANNELS;
        SimOptions {
            callbacks: 100_000,
            cfg,
            seccomp: false,
            sleep_every: 64,
            taps: TapSim::default(),
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct SimReport {
    /// Callbacks run in the measured section.
    pub callbacks: u64,
    /// Heap operations made by the audio thread inside the measured section.
    pub audio_allocs: u64,
    /// Whether the counting allocator was seen to count on the audio thread (self-check).
    pub counter_live: bool,
    /// Seccomp traps inside the endpoint's windows (`begin_callback` .. `end_callback`) of the
    /// measured section (`None` when seccomp was not used).
    pub traps: Option<u64>,
    /// First and last trapped system call numbers.
    pub trapped: (i64, i64),
    /// Most commands handled in one callback.
    pub max_per_callback: usize,
    /// Commands accepted by `try_send`.
    pub sent: u64,
    /// Answers received (Ack/Reject/Pong) before the network side dropped its endpoint.
    pub answered: u64,
    /// `Ok` when every sent command got exactly one answer, in order, of the right kind.
    pub exactly_once: Result<(), String>,
    /// `try_send` refusals (command queue full).
    pub send_full: u64,
    /// Transport telemetry received.
    pub telemetry: u64,
    /// Health counters read at the end of the network side.
    pub telemetry_dropped: u64,
    /// Drains stopped by a full reply queue.
    pub reply_stalls: u64,
    /// Callback index at which the network side dropped its endpoint (`0` = never).
    pub net_dropped_at: u64,
    /// Meter frames taken with a non-zero channel count.
    pub meter_takes: u64,
    /// Callbacks in which `drain` answered at least one command.
    pub callbacks_with_answers: u64,
    /// Callbacks the audio thread ran after the network side dropped its endpoint.
    pub audio_ran_without_net: u64,
    /// What the tap reader saw (all zero without taps).
    pub taps: TapReport,
}

impl Default for SimReport {
    fn default() -> Self {
        SimReport {
            callbacks: 0,
            audio_allocs: 0,
            counter_live: false,
            traps: None,
            trapped: (-1, -1),
            max_per_callback: 0,
            sent: 0,
            answered: 0,
            exactly_once: Ok(()),
            send_full: 0,
            telemetry: 0,
            telemetry_dropped: 0,
            reply_stalls: 0,
            net_dropped_at: 0,
            meter_takes: 0,
            audio_ran_without_net: 0,
            callbacks_with_answers: 0,
            taps: TapReport::default(),
        }
    }
}

static SECCOMP_SERIAL: Mutex<()> = Mutex::new(());

/// The test engine's decision for a command (deterministic from its id).
pub fn expected_outcome(cmd: &RtCommand) -> Outcome {
    if cmd.id % 7 == 3 {
        Outcome::Rejected(RejectReason::OutOfRange)
    } else {
        Outcome::Applied
    }
}

/// The command sent with id `id`: every 11th is a ping.
pub fn command_for(id: u32) -> RtCommand {
    let op = match id % 11 {
        0 => RtOp::Ping { nonce: id ^ 0xABCD },
        1 => RtOp::Play,
        2 => RtOp::Stop,
        3 => RtOp::Seek {
            position: u64::from(id) * 100,
        },
        4 => RtOp::Tempo { bpm: 120.0 },
        5 => RtOp::Loop {
            start: 0,
            end: 48_000,
            enabled: true,
        },
        _ => RtOp::ParamSet {
            node: id % 13,
            param: 2,
            value: 0.5,
            ramp_ms: 5.0,
        },
    };
    RtCommand { id, op }
}

/// Runs the simulation. `engine` is the command handler called on the audio thread.
pub fn simulate<E>(opts: SimOptions, engine: E) -> SimReport
where
    E: FnMut(&RtCommand) -> Outcome + Send + 'static,
{
    let _serial = opts
        .seccomp
        .then(|| SECCOMP_SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
    if opts.seccomp {
        seccomp::install_handler().expect("SIGSYS handler");
        seccomp::reset();
    }
    let (audio, mut net) = bridge(&opts.cfg);
    let tap_stop = Arc::new(AtomicBool::new(false));
    let tap_reader = net
        .take_taps()
        .map(|reader| tap_sim::spawn_reader(reader, Arc::clone(&tap_stop)));
    let progress = Arc::new(AtomicU64::new(0));
    let audio_thread = {
        let progress = Arc::clone(&progress);
        let (callbacks, seccomp, sleep_every) = (opts.callbacks, opts.seccomp, opts.sleep_every);
        let taps = opts.taps.clone();
        std::thread::spawn(move || {
            audio_main(
                audio,
                engine,
                callbacks,
                seccomp,
                sleep_every,
                &taps,
                &progress,
            )
        })
    };
    let mut report = net_main(net, &progress, opts.callbacks);
    let audio_report = audio_thread.join().expect("audio thread");
    tap_stop.store(true, Ordering::Release);
    if let Some(reader) = tap_reader {
        report.taps = reader.join().expect("tap reader thread");
    }
    report.callbacks = audio_report.callbacks;
    report.audio_allocs = audio_report.audio_allocs;
    report.counter_live = audio_report.counter_live;
    report.traps = audio_report.traps;
    report.trapped = audio_report.trapped;
    report.max_per_callback = audio_report.max_per_callback;
    report.audio_ran_without_net = audio_report.audio_ran_without_net;
    report.callbacks_with_answers = audio_report.callbacks_with_answers;
    report
}

fn audio_main<E>(
    mut audio: AudioEndpoint,
    mut engine: E,
    callbacks: u64,
    use_seccomp: bool,
    sleep_every: u64,
    taps: &TapSim,
    progress: &AtomicU64,
) -> SimReport
where
    E: FnMut(&RtCommand) -> Outcome,
{
    let mut r = SimReport::default();
    // Self-check: the counting allocator must see this thread's allocations.
    let before_probe = thread_allocs();
    drop(std::hint::black_box(Box::new(0u64)));
    r.counter_live = thread_allocs() >= before_probe + 2;

    let mut blocks = [[0.0f32; FRAMES]; CHANNELS];
    let mut transport = TransportState::default();
    let base = Instant::now();
    if use_seccomp {
        if let Err(e) = seccomp::install_on_current_thread() {
            r.exactly_once = Err(format!("seccomp unavailable: {}", e.0));
            return r;
        }
    }
    let traps_before = seccomp::window_traps();
    let allocs_before = thread_allocs();
    // ---- measured section: nothing below may allocate or make a forbidden system call ----
    let (mut max, mut with_answers) = (0, 0u64);
    // Run at least `callbacks`, and keep running until the network side has been gone for an
    // eighth of that (so its "disconnect for good" is always exercised, however the threads are
    // scheduled). A cap keeps a broken network side from hanging the test.
    let (mut n, mut gone_since) = (0u64, None);
    while n < callbacks.saturating_mul(10) {
        if gone_since.is_none() && audio.is_net_gone() {
            gone_since = Some(n);
        }
        if n >= callbacks && gone_since.is_some_and(|g| n >= g + callbacks / 8) {
            break;
        }
        let now = base.elapsed().as_nanos() as u64;
        // The endpoint's window: under seccomp, only system calls made from here to the end of
        // `end_callback` count, and no sleep is allowed in it.
        seccomp::enter_window();
        audio.begin_callback(now, FRAMES as u32);
        let handled = audio.drain(&mut engine);
        max = max.max(handled);
        with_answers += u64::from(handled > 0);
        render(&mut blocks, n, &mut transport);
        for (ch, block) in blocks.iter().enumerate() {
            audio.publish_meter(ch, block);
        }
        tap_sim::publish(&mut audio, &blocks, n, taps);
        audio.publish_transport(&transport);
        if n % 10_007 == 0 {
            audio.report_xrun();
        }
        audio.end_callback(base.elapsed().as_nanos() as u64);
        seccomp::exit_window();
        n += 1;
        progress.store(n, Ordering::Release);
        if sleep_every != 0 && n % sleep_every == 0 {
            wait(Duration::from_micros(20), use_seccomp);
        }
    }
    let allocs_after = thread_allocs();
    let traps_after = seccomp::window_traps();
    // ---- end of measured section ----
    r.callbacks = n;
    r.callbacks_with_answers = with_answers;
    r.audio_ran_without_net = gone_since.map_or(0, |g| n - g);
    r.audio_allocs = allocs_after - allocs_before;
    r.max_per_callback = max;
    if use_seccomp {
        r.traps = Some(traps_after - traps_before);
        r.trapped = seccomp::trapped_numbers();
    }
    // Keep the endpoint alive past the measured section: if it is the last half, dropping it
    // frees the queues (allowed here, outside the callback).
    drop(audio);
    r
}

/// The driver's wait for the next period, outside the endpoint's window: a sleep, or under
/// seccomp (which traps sleeps) a spin on the clock.
fn wait(d: Duration, spin: bool) {
    if !spin {
        std::thread::sleep(d);
        return;
    }
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A cheap deterministic "render": a decaying ramp per channel, transport advance.
#[inline]
fn render(blocks: &mut [[f32; FRAMES]; CHANNELS], n: u64, transport: &mut TransportState) {
    let g = ((n % 100) as f32) / 100.0;
    for (ch, block) in blocks.iter_mut().enumerate() {
        for (i, s) in block.iter_mut().enumerate() {
            *s = g * (((i + ch) % 16) as f32 / 16.0 - 0.5);
        }
    }
    transport.position += FRAMES as u64;
}

struct Checker {
    next_answer: u32,
    last_sample: u64,
    error: Option<String>,
}

impl Checker {
    fn check(&mut self, reply: &RtReply) {
        let Some(id) = reply.answers() else { return };
        if self.error.is_some() {
            return;
        }
        if id != self.next_answer {
            self.error = Some(format!("answer for id {id}, expected {}", self.next_answer));
            return;
        }
        self.next_answer += 1;
        let cmd = command_for(id);
        let ok = match (*reply, cmd.op, expected_outcome(&cmd)) {
            (RtReply::Pong { nonce, sample, .. }, RtOp::Ping { nonce: n }, _) => {
                nonce == n && sample >= self.last_sample
            }
            (RtReply::Reject { reason, .. }, _, Outcome::Rejected(r)) => reason == r,
            (RtReply::Ack { sample, .. }, _, Outcome::Applied) => {
                let ok = sample >= self.last_sample;
                self.last_sample = sample;
                ok
            }
            _ => false,
        };
        if !ok {
            self.error = Some(format!("wrong answer {reply:?} for {cmd:?}"));
        }
    }
}

fn net_main(mut net: NetEndpoint, progress: &AtomicU64, total: u64) -> SimReport {
    let mut r = SimReport::default();
    let mut checker = Checker {
        next_answer: 0,
        last_sample: 0,
        error: None,
    };
    let mut next_id: u32 = 0;
    let (mut peak, mut rms) = ([0.0f32; CHANNELS], [0.0f32; CHANNELS]);
    let phase_len = total / PHASES;
    let mut last_slow_pop = Instant::now();
    loop {
        let done = progress.load(Ordering::Acquire);
        let phase = done / phase_len.max(1);
        if done >= total || phase >= 6 {
            break;
        }
        let (send, pop) = match phase {
            0 | 5 => (4, usize::MAX),
            1 => (usize::MAX, usize::MAX),
            2 => (usize::MAX, 0),
            3 => {
                let due = last_slow_pop.elapsed() > Duration::from_micros(200);
                if due {
                    last_slow_pop = Instant::now();
                }
                (usize::MAX, usize::from(due))
            }
            4 => (0, 0),
            _ => unreachable!(),
        };
        send_some(&mut net, &mut next_id, send, &mut r);
        pop_some(&mut net, pop, &mut checker, &mut r);
        net.collect_meters();
        if done.is_multiple_of(4) && net.take_meters(&mut peak, &mut rms) > 0 {
            r.meter_takes += 1;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    // Stop sending; collect every outstanding answer (the audio thread keeps running until
    // this side is gone; the deadline only guards against a broken bridge).
    let deadline = Instant::now() + Duration::from_secs(30);
    while net.commands_in_flight() > 0 && Instant::now() < deadline {
        pop_some(&mut net, usize::MAX, &mut checker, &mut r);
        std::thread::sleep(Duration::from_micros(50));
    }
    pop_some(&mut net, usize::MAX, &mut checker, &mut r);
    let h = net.health();
    r.telemetry_dropped = h.telemetry_dropped;
    r.reply_stalls = h.reply_stalls;
    r.sent = next_id as u64;
    r.answered = u64::from(checker.next_answer);
    r.exactly_once = match (checker.error, net.commands_in_flight()) {
        (Some(e), _) => Err(e),
        (None, 0) if r.answered == r.sent => Ok(()),
        (None, n) => Err(format!("{n} commands unanswered of {}", r.sent)),
    };
    // "Disconnect for good": drop the network side while the audio thread keeps running.
    r.net_dropped_at = progress.load(Ordering::Acquire);
    drop(net);
    r
}

fn send_some(net: &mut NetEndpoint, next_id: &mut u32, max: usize, r: &mut SimReport) {
    for _ in 0..max.min(10_000) {
        match net.try_send(command_for(*next_id)) {
            Ok(()) => *next_id += 1,
            Err(cmd) => {
                assert_eq!(
                    cmd,
                    command_for(*next_id),
                    "try_send must give the command back"
                );
                r.send_full += 1;
                break;
            }
        }
    }
}

fn pop_some(net: &mut NetEndpoint, max: usize, checker: &mut Checker, r: &mut SimReport) {
    for _ in 0..max {
        let Some(reply) = net.pop_reply() else { break };
        if let RtReply::Transport(_) = reply {
            r.telemetry += 1;
        }
        checker.check(&reply);
    }
}
