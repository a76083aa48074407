//! loophole-ipc's whole stack against the physical floor, in one process run. Sections:
//!
//! 1. `rt` — ping → pong through the real server (framing, JSON, session, mio thread),
//!    interleaved with the raw TCP floor, the raw mio floor and the tokio contender of
//!    `floor.rs`; allocations of every server thread per round trip.
//! 2. `stress` — the same round trip while other clients are refused (`session_busy`) and a
//!    garbage sender connects in loops, interleaved with the same client unstressed.
//! 3. `applied` — a real-time command (`param.set`) at a random moment until its `ack`, with a
//!    simulated audio device at 128 frames / 48 kHz; the fixed cost (ack at client − end of
//!    the callback that applied it) against its floor (timer lateness + ½ raw TCP round trip).
//! 4. `throughput` — pipelined commands per second with every ack checked; 64-channel meter
//!    frames per second through `Session::send_telemetry` and a socket.
//! 5. `worst` — 225 000 compressed callbacks while a client hammers the server: callback-side
//!    cost, p99.99 and max.
//!
//! `cargo bench --bench stack`. `LOOPHOLE_BENCH_SECTIONS=rt,stress,...` picks sections; the
//! `LOOPHOLE_BENCH_*` variables of `common::BenchConfig` apply, plus `LOOPHOLE_BENCH_AUDIO_CPU`
//! (default: the other CPU), `LOOPHOLE_BENCH_COMMANDS` (section 3, default 5 000 per row),
//! `LOOPHOLE_BENCH_PIPELINE` (section 4, default 500 000 commands), `LOOPHOLE_BENCH_CALLBACKS`
//! (section 5, default 225 000). Without `--bench` (`cargo test --benches`) it is a smoke run.
#![warn(clippy::undocumented_unsafe_blocks)]

mod common;
#[path = "stack/support.rs"]
mod support;

use common::servers::{self, OnStart};
use common::wire::{check_pong, FrameClient, PING_JSON, PREFACE};
use common::{BenchConfig, Contender, Outcome, Recorder};
use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::clock;
use loophole_ipc::message::{
    encode_frame, Meters, ParamSet, ServerMessage, Stream, Subscribe, TransportState,
};
use loophole_ipc::net::Server;
use loophole_ipc::rt::{AudioEndpoint, Outcome as RtOutcome, RtConfig};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Rng, Stack, Watched};

#[global_allocator]
static GLOBAL: support::CountingAlloc = support::CountingAlloc;

/// 128 frames at 48 kHz.
const FRAMES: u32 = 128;
const RATE: u32 = 48_000;
const PERIOD_NS: u64 = FRAMES as u64 * 1_000_000_000 / RATE as u64;
/// Length of the busy-wait baseline window of section 5 (about the endpoint work's p50).
const SPIN_NS: u64 = 1_500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn section_on(name: &str) -> bool {
    match std::env::var("LOOPHOLE_BENCH_SECTIONS") {
        Ok(s) => s.split(',').any(|x| x.trim() == name),
        Err(_) => true,
    }
}

/// Settings beyond `BenchConfig`.
#[derive(Clone, Copy, Debug)]
struct StackConfig {
    base: BenchConfig,
    audio_cpu: usize,
    commands: u64,
    pipeline: u64,
    callbacks: u64,
}

impl StackConfig {
    fn from_env() -> Self {
        let base = BenchConfig::from_env();
        let n = support::online_cpus();
        let other = if n > 1 { (base.server_cpu + 1) % n } else { 0 };
        let smoke = base.smoke;
        Self {
            base,
            audio_cpu: env_u64("LOOPHOLE_BENCH_AUDIO_CPU", other as u64) as usize,
            commands: env_u64("LOOPHOLE_BENCH_COMMANDS", if smoke { 60 } else { 5_000 }),
            pipeline: env_u64(
                "LOOPHOLE_BENCH_PIPELINE",
                if smoke { 2_000 } else { 500_000 },
            ),
            callbacks: env_u64(
                "LOOPHOLE_BENCH_CALLBACKS",
                if smoke { 2_000 } else { 225_000 },
            ),
        }
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn io_of(e: loophole_ipc::client::ClientError) -> io::Error {
    io::Error::other(e.to_string())
}

/// An `OnStart` for the baseline servers: registers the server thread's allocation counter.
fn watched_start(slot: Arc<AtomicUsize>) -> OnStart {
    Box::new(move || {
        if let Ok(w) = support::watch(support::gettid()) {
            slot.store(w.0, Ordering::Relaxed);
        }
    })
}

// =============================================================================================
// 1. Round trip.

fn section_rt(cfg: &StackConfig) -> io::Result<()> {
    let base = &cfg.base;
    let slots: [Arc<AtomicUsize>; 4] =
        std::array::from_fn(|_| Arc::new(AtomicUsize::new(usize::MAX)));
    let before = support::task_ids()?;
    let (tcp_addr, tcp_t) =
        servers::spawn_raw_tcp(base.server_cpu, watched_start(slots[0].clone()))?;
    let (mio_addr, mio_t) =
        servers::spawn_raw_mio(base.server_cpu, watched_start(slots[1].clone()))?;
    let (tok_addr, tok_t) = servers::spawn_tokio(base.server_cpu, watched_start(slots[2].clone()))?;
    let (tfd_addr, tfd_t) =
        servers::spawn_raw_mio_timerfd(base.server_cpu, watched_start(slots[3].clone()))?;
    let raw_tids: Vec<(String, i32)> = ["raw-tcp", "raw-mio", "tokio", "raw-mio-tfd"]
        .iter()
        .map(|n| support::new_thread_named(&before, n).map(|t| (n.to_string(), t)))
        .collect::<io::Result<_>>()?;
    // The crate's server: spawned from the pinned main thread, so its thread inherits CPU
    // `client_cpu`; checked below. Two servers: one for the bench frame client, one for the
    // crate's own blocking Client (a server has one controlling session).
    let mut stack = support::spawn_stack(Server::builder(), &RtConfig::default())?;
    let mut stack_c = support::spawn_stack(Server::builder(), &RtConfig::default())?;

    println!("\n## 1. Ping-pong round trip through the whole stack\n");
    for (n, t) in &raw_tids {
        println!(
            "- {}",
            support::check_affinity(&format!("{n} server thread"), *t, base.server_cpu)?
        );
    }
    println!(
        "- {}",
        support::check_affinity(
            "loophole-net (bench client) thread",
            stack.tid,
            base.client_cpu
        )?
    );
    println!(
        "- {}",
        support::check_affinity(
            "loophole-net (crate Client) thread",
            stack_c.tid,
            base.client_cpu
        )?
    );
    println!(
        "- {}",
        support::check_affinity("client (main) thread", support::gettid(), base.client_cpu)?
    );
    println!("- the audio endpoints exist but no audio thread runs (a stopped device): ping is answered by the network thread");

    let mut tcp = FrameClient::new(servers::connect_tcp(tcp_addr)?, PING_JSON)?;
    let mut mio = FrameClient::new(servers::connect_tcp(mio_addr)?, PING_JSON)?;
    let mut tok = FrameClient::new(servers::connect_tcp(tok_addr)?, PING_JSON)?;
    let mut tfd = FrameClient::new(servers::connect_tcp(tfd_addr)?, PING_JSON)?;
    let mut ours = support::connect_stack(stack.handle.local_addr())?;
    let mut crate_client =
        Client::connect(stack_c.handle.local_addr(), &ClientOptions::default()).map_err(io_of)?;
    for (name, c) in [
        ("raw mio + timerfd", &mut tfd),
        ("raw tcp", &mut tcp),
        ("raw mio", &mut mio),
        ("tokio", &mut tok),
        ("loophole-ipc", &mut ours),
    ] {
        c.round_trip()
            .and_then(|_| check_pong(c.last_reply()))
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    }
    println!(
        "- loophole-ipc pong on the wire: {} B payload (floor pong {} B): `{}`",
        ours.last_reply().len(),
        common::wire::PONG_JSON.len(),
        String::from_utf8_lossy(ours.last_reply())
    );

    let slot = |s: &Arc<AtomicUsize>| s.load(Ordering::Relaxed);
    let count = |i: usize| move || support_count(i);
    let (s_tcp, s_mio, s_tok, s_tfd) = (
        slot(&slots[0]),
        slot(&slots[1]),
        slot(&slots[2]),
        slot(&slots[3]),
    );
    let (w_ours, w_c) = (stack.allocs, stack_c.allocs);
    let mut contenders = vec![
        Contender::new("raw TCP, blocking std (floor)", || tcp.round_trip())
            .with_alloc_counter(count(s_tcp)),
        Contender::new("raw TCP, mio event loop", || mio.round_trip())
            .with_alloc_counter(count(s_mio)),
        Contender::new(
            "tokio current_thread + LengthDelimitedCodec + serde_json",
            || tok.round_trip(),
        )
        .with_alloc_counter(count(s_tok)),
        Contender::new("loophole-ipc server (bench frame client)", || {
            ours.round_trip()
        })
        .with_alloc_counter(move || w_ours.allocs()),
        Contender::new("loophole-ipc server (crate blocking Client::ping)", || {
            let t0 = Instant::now();
            crate_client.ping().map_err(io_of)?;
            Ok(t0.elapsed())
        })
        .with_alloc_counter(move || w_c.allocs()),
        Contender::new("diagnostic: raw mio + one timerfd_settime per pass", || {
            tfd.round_trip()
        })
        .with_alloc_counter(count(s_tfd)),
    ];
    let outcomes = common::run_interleaved(&mut contenders, base)?;
    drop(contenders);
    common::print_table(
        &format!(
            "Ping → pong, all threads on CPU {}, {} round trips each (+{} warm-up), batches of {}; allocs/op = that server's thread",
            base.client_cpu, base.rounds, base.warmup, base.batch
        ),
        &outcomes,
    );
    let floor = outcomes[0].summary;
    let tokio = outcomes[2].summary;
    let mine = &outcomes[3];
    let (r50, r99) = (
        ratio(mine.summary.p50, floor.p50),
        ratio(mine.summary.p99, floor.p99),
    );
    println!("\nTargets (loophole-ipc, bench frame client, vs raw TCP floor of this run):");
    println!("- p50 ≤ 1.10x floor: {r50:.2}x — {}", verdict(r50 <= 1.10));
    println!("- p99 ≤ 1.25x floor: {r99:.2}x — {}", verdict(r99 <= 1.25));
    println!(
        "- ahead of tokio: p50 {} vs {} µs, p99 {} vs {} µs — {}",
        us(mine.summary.p50),
        us(tokio.p50),
        us(mine.summary.p99),
        us(tokio.p99),
        if mine.summary.p50 as f64 <= tokio.p50 as f64 * 0.98 && mine.summary.p99 <= tokio.p99 {
            "MET"
        } else if mine.summary.p50 as f64 <= tokio.p50 as f64 * 1.02 {
            "MISSED (a tie: p50 within 2 %)"
        } else {
            "MISSED"
        }
    );
    let a = mine.allocs_per_op.unwrap_or(f64::NAN);
    println!(
        "- 0 allocations per round trip on the server thread: {a:.4} — {}",
        verdict(a == 0.0)
    );

    drop((tcp, mio, tok, ours, crate_client, tfd));
    for t in [tcp_t, mio_t, tok_t, tfd_t] {
        let _ = t.join();
    }
    stack.handle.shutdown();
    stack_c.handle.shutdown();
    drop((stack.audio.take(), stack_c.audio.take()));
    Ok(())
}

fn support_count(slot: usize) -> u64 {
    if slot == usize::MAX {
        return 0;
    }
    support::Watched(slot).allocs()
}

// =============================================================================================
// 2. Tail under stress.

struct Stress {
    active: AtomicBool,
    stop: AtomicBool,
    done: [AtomicU64; 2],
    idle: [AtomicBool; 2],
    unexpected: AtomicU64,
    busy_seen: AtomicU64,
    active_ns: AtomicU64,
    /// CPU time of the network thread while the stress was active (ns, from its schedstat).
    active_cpu_ns: AtomicU64,
}

/// CPU time a thread of this process has run (ns): the first field of
/// `/proc/self/task/<tid>/schedstat`. 0 when unreadable.
fn thread_cpu_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const STRESS_MAX_ITERS: u64 = 2_000_000;

fn stress_loop(k: usize, addr: SocketAddr, cpu: usize, st: Arc<Stress>) -> io::Result<()> {
    common::pin_current_thread(cpu)?;
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&common::wire::frame(&support::hello_payload(1)?));
    let garbage = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
    let mut buf = vec![0u8; 4096];
    let mut iters = 0u64;
    // Opt-in pacing: LOOPHOLE_BENCH_STRESS_PAUSE_US between iterations (default 0: flat out).
    let pause = Duration::from_micros(env_u64("LOOPHOLE_BENCH_STRESS_PAUSE_US", 0));
    while !st.stop.load(Ordering::Relaxed) && iters < STRESS_MAX_ITERS {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        if !st.active.load(Ordering::Acquire) {
            st.idle[k].store(true, Ordering::Release);
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        st.idle[k].store(false, Ordering::Release);
        iters += 1;
        let Ok(mut s) = TcpStream::connect(addr) else {
            st.unexpected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        support::linger_zero(&s);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        if k == 0 {
            // A second client: preface + hello, expect the preface and an error session_busy.
            let ok = s.write_all(&hello).is_ok() && read_busy(&mut s, &mut buf);
            if ok {
                st.busy_seen.fetch_add(1, Ordering::Relaxed);
            } else {
                st.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            // Garbage instead of a preface; read whatever comes back (until EOF or timeout).
            let _ = s.write_all(&garbage);
            let _ = s.read(&mut buf);
        }
        drop(s); // RST (linger 0): no TIME_WAIT pile-up
        st.done[k].fetch_add(1, Ordering::Release);
    }
    st.idle[k].store(true, Ordering::Release);
    Ok(())
}

fn read_busy(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut pre = [0u8; 8];
    let mut h = [0u8; 8];
    if s.read_exact(&mut pre).is_err() || pre != PREFACE || s.read_exact(&mut h).is_err() {
        return false;
    }
    let Ok(len) = common::wire::parse_header(&h) else {
        return false;
    };
    if s.read_exact(&mut buf[..len]).is_err() {
        return false;
    }
    matches!(ServerMessage::decode(&buf[..len]), Ok((_, ServerMessage::Error(e))) if e.code.as_str() == "session_busy")
}

fn section_stress(cfg: &StackConfig) -> io::Result<()> {
    let base = &cfg.base;
    let mut stack = support::spawn_stack(Server::builder(), &RtConfig::default())?;
    let addr = stack.handle.local_addr();
    let client = RefCell::new(support::connect_stack(addr)?);
    let st = Arc::new(Stress {
        active: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: [AtomicU64::new(0), AtomicU64::new(0)],
        idle: [AtomicBool::new(false), AtomicBool::new(false)],
        unexpected: AtomicU64::new(0),
        busy_seen: AtomicU64::new(0),
        active_ns: AtomicU64::new(0),
        active_cpu_ns: AtomicU64::new(0),
    });
    let net_tid = stack.tid;
    let stress_cpu = cfg.audio_cpu;
    let threads: Vec<_> = (0..2)
        .map(|k| {
            let st = Arc::clone(&st);
            std::thread::spawn(move || stress_loop(k, addr, stress_cpu, st))
        })
        .collect();
    println!("\n## 2. Round trip under stress (refused clients + garbage sender)\n");
    println!(
        "- {}",
        support::check_affinity("loophole-net thread", stack.tid, base.client_cpu)?
    );
    println!(
        "- stress threads (busy client, garbage sender) pinned to CPU {stress_cpu}; each loops connect → send → read → close (RST), at most {STRESS_MAX_ITERS} times"
    );
    let phase_start = RefCell::new(None::<(Instant, u64)>);
    let wait = |cond: &dyn Fn() -> bool, what: &str| -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "stress threads: timed out waiting for {what}"
                )));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    };
    let stop_stress = |st: &Stress| -> io::Result<()> {
        if let Some((t0, cpu0)) = phase_start.borrow_mut().take() {
            st.active_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            st.active_cpu_ns.fetch_add(
                thread_cpu_ns(net_tid).saturating_sub(cpu0),
                Ordering::Relaxed,
            );
        }
        st.active.store(false, Ordering::Release);
        wait(
            &|| st.idle.iter().all(|i| i.load(Ordering::Acquire)),
            "idle",
        )
    };
    let w = stack.allocs;
    let mut contenders = vec![
        Contender::new("controlling client, unstressed", || {
            client.borrow_mut().round_trip()
        })
        .with_before_batch(|| stop_stress(&st))
        .with_alloc_counter(move || w.allocs()),
        Contender::new("controlling client, stressed", || {
            client.borrow_mut().round_trip()
        })
        .with_before_batch(|| {
            // The phase starts before the stressors do, so that every connection they count
            // falls in its time and CPU; two stressed batches in a row (the rotation) are one
            // phase: keep its start.
            phase_start
                .borrow_mut()
                .get_or_insert_with(|| (Instant::now(), thread_cpu_ns(net_tid)));
            let d0 = [0, 1].map(|k| st.done[k].load(Ordering::Acquire));
            st.active.store(true, Ordering::Release);
            wait(
                &|| (0..2).all(|k| st.done[k].load(Ordering::Acquire) > d0[k]),
                "stress to start",
            )?;
            Ok(())
        })
        .with_alloc_counter(move || w.allocs()),
    ];
    let cpu_run0 = thread_cpu_ns(net_tid);
    let outcomes = common::run_interleaved(&mut contenders, base);
    drop(contenders);
    stop_stress(&st)?;
    let cpu_run = thread_cpu_ns(net_tid).saturating_sub(cpu_run0);
    st.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("stress thread panicked"))??;
    }
    let outcomes = outcomes?;
    common::print_table(
        &format!(
            "Ping → pong of the controlling client, CPU {}; stressors on CPU {stress_cpu}; allocs/op = network thread (includes its work for the refused connections)",
            base.client_cpu
        ),
        &outcomes,
    );
    let secs = st.active_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let (busy, garb) = (
        st.done[0].load(Ordering::Relaxed),
        st.done[1].load(Ordering::Relaxed),
    );
    let stats = stack.handle.stats();
    println!(
        "\nstress while active ({secs:.2} s): {busy} refused clients ({:.0}/s, {} saw session_busy), {garb} garbage connections ({:.0}/s), {} unexpected outcomes; server stats: accepted {}, refused {}",
        busy as f64 / secs.max(1e-9),
        st.busy_seen.load(Ordering::Relaxed),
        garb as f64 / secs.max(1e-9),
        st.unexpected.load(Ordering::Relaxed),
        stats.accepted,
        stats.refused
    );
    // The network thread's CPU per refused connection: its CPU while the stress was active,
    // less what the same number of unstressed round trips cost it (measured in the same run).
    let rounds = base.rounds + base.warmup;
    let cpu_stressed = st.active_cpu_ns.load(Ordering::Relaxed);
    let cpu_unstressed = cpu_run.saturating_sub(cpu_stressed);
    let per_rt = cpu_unstressed as f64 / rounds.max(1) as f64;
    let conns = (busy + garb).max(1) as f64;
    let per_conn = (cpu_stressed as f64 - per_rt * rounds as f64).max(0.0) / conns;
    println!(
        "network thread CPU (schedstat): {:.1} % of one CPU while stressed, {:.1} µs per unstressed round trip, {:.1} µs per refused connection",
        100.0 * cpu_stressed as f64 / (secs * 1e9).max(1.0),
        per_rt / 1e3,
        per_conn / 1e3
    );
    let (u, s) = (outcomes[0].summary, outcomes[1].summary);
    let r = ratio(s.p99, u.p99);
    println!(
        "Target: stressed p99 ≤ 2x unstressed p99: {} / {} µs = {r:.2}x — {}",
        us(s.p99),
        us(u.p99),
        verdict(r <= 2.0)
    );
    drop(client);
    stack.handle.shutdown();
    drop(stack.audio.take());
    Ok(())
}

// =============================================================================================
// 3. Command-applied latency.

/// Callback end times keyed by block index (sample clock / FRAMES), preallocated.
struct EndTable {
    tag: Box<[AtomicU64]>,
    t: Box<[AtomicU64]>,
    /// How much later than the previous period this period's wake-up was (ns, an `i64`:
    /// negative when earlier): how much later the callback started than the network thread's
    /// prediction (previous start + period).
    later: Box<[AtomicU64]>,
}

const TABLE: usize = 1 << 14;

impl EndTable {
    fn new() -> Self {
        Self {
            tag: (0..TABLE).map(|_| AtomicU64::new(u64::MAX)).collect(),
            t: (0..TABLE).map(|_| AtomicU64::new(0)).collect(),
            later: (0..TABLE).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn record(&self, block: u64, t: u64, later: u64) {
        let i = (block as usize) % TABLE;
        self.t[i].store(t, Ordering::Relaxed);
        self.later[i].store(later, Ordering::Relaxed);
        self.tag[i].store(block, Ordering::Release);
    }
    /// The end time of `block` and how much later than predicted it started, waiting up to
    /// 10 ms for the audio thread to record it.
    fn get(&self, block: u64) -> Option<(u64, u64)> {
        let i = (block as usize) % TABLE;
        let until = Instant::now() + Duration::from_millis(10);
        loop {
            if self.tag[i].load(Ordering::Acquire) == block {
                return Some((
                    self.t[i].load(Ordering::Relaxed),
                    self.later[i].load(Ordering::Relaxed),
                ));
            }
            if Instant::now() > until {
                return None;
            }
            std::hint::spin_loop();
        }
    }
}

/// One simulated device period: a callback on every endpoint, end time recorded before
/// `end_callback` (so it is visible before the network thread can see the callback ended).
fn callback(audio: &mut AudioEndpoint, table: &EndTable, applied: &AtomicU64, later: u64) {
    audio.begin_callback(clock::now_ns(), FRAMES);
    let n = audio.drain(|_| RtOutcome::Applied);
    if n > 0 {
        applied.fetch_add(n as u64, Ordering::Relaxed);
    }
    let end = clock::now_ns();
    table.record(audio.block_start() / u64::from(FRAMES), end, later);
    audio.end_callback(end);
}

struct Applied {
    fixed: Recorder,
    negative: u64,
    missing: u64,
    /// Fixed costs above half a period: the ack waited for a later wake-up than the callback's.
    over_half_period: u64,
    /// Operations so far; the first `warmup` are not recorded.
    calls: u64,
    /// Start later than predicted, for the callbacks of acks that left one wake-up late …
    later_late: Recorder,
    /// … and for all the others.
    later_ontime: Recorder,
    /// For the on-time acks, how much *earlier* than predicted the callback started: the
    /// network thread wakes at the predicted end, so the ack waits that long after the end.
    earlier_ontime: Recorder,
}

fn section_applied(cfg: &StackConfig) -> io::Result<()> {
    let base = &cfg.base;
    // Row A: wake_margin 50 µs (the default before the late-callback fix). Row B: the default,
    // wake_margin 0.
    let margins = [Duration::from_micros(50), Duration::ZERO];
    let mut stacks: Vec<Stack> = margins
        .iter()
        .map(|m| {
            support::spawn_stack(
                Server::builder().wake_margin(*m),
                &RtConfig::default().with_sample_rate(RATE),
            )
        })
        .collect::<io::Result<_>>()?;
    let tables: Arc<[EndTable; 2]> = Arc::new([EndTable::new(), EndTable::new()]);
    let applied = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut audios: Vec<AudioEndpoint> = stacks
        .iter_mut()
        .map(|s| s.audio.take().expect("audio"))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<(i32, Watched)>>();
    let audio_cpu = cfg.audio_cpu;
    // Opt-in: LOOPHOLE_BENCH_AUDIO_FIFO=<priority> runs the sleeping audio thread SCHED_FIFO.
    let fifo = std::env::var("LOOPHOLE_BENCH_AUDIO_FIFO")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    let audio_thread = {
        let (tables, applied, stop) =
            (Arc::clone(&tables), Arc::clone(&applied), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("sim-audio".into())
            .spawn(move || {
                if let Some(prio) = fifo {
                    match support::request_fifo(prio) {
                        Ok(p) => println!("- audio thread: SCHED_FIFO priority {p} granted"),
                        Err(e) => println!("- audio thread: SCHED_FIFO refused ({e}); SCHED_OTHER"),
                    }
                }
                let setup = common::pin_current_thread(audio_cpu)
                    .and_then(|_| common::set_timer_slack_ns(1))
                    .and_then(|_| {
                        support::watch(support::gettid()).map(|w| (support::gettid(), w))
                    });
                let ok = setup.is_ok();
                let _ = tx.send(setup);
                if !ok {
                    return (audios, 0u64, 0u64);
                }
                let t0 = common::monotonic_ns();
                let (mut k, mut late_max, mut prev_late) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let due = t0 + k * PERIOD_NS;
                    support::sleep_until(due);
                    let late = common::monotonic_ns().saturating_sub(due);
                    late_max = late_max.max(late);
                    let later = (late as i64).wrapping_sub(prev_late as i64) as u64;
                    prev_late = late;
                    for (i, a) in audios.iter_mut().enumerate() {
                        callback(a, &tables[i], &applied, later);
                    }
                    k += 1;
                }
                (audios, k, late_max)
            })?
    };
    let (audio_tid, audio_allocs) = rx.recv().map_err(io::Error::other)??;
    let (raw_addr, raw_t) = servers::spawn_raw_tcp(base.server_cpu, Box::new(|| {}))?;
    let mut raw = FrameClient::new(servers::connect_tcp(raw_addr)?, PING_JSON)?;

    println!("\n## 3. Command applied: param.set send → ack, 128 frames / 48 kHz device\n");
    for s in &stacks {
        println!(
            "- {}",
            support::check_affinity("loophole-net thread", s.tid, base.client_cpu)?
        );
    }
    println!(
        "- {}",
        support::check_affinity("simulated audio thread", audio_tid, audio_cpu)?
    );
    println!(
        "- audio thread: clock_nanosleep(TIMER_ABSTIME) to every period start ({PERIOD_NS} ns), PR_SET_TIMERSLACK 1 ns, one callback per server per period (begin, drain → Applied, end), callback end time stored before end_callback in a preallocated table keyed by block = ack.sample / {FRAMES}"
    );
    println!("- rt-wake waker mode: not measured by this bench (wired through ServerBuilder::audio_waker; tests/net_wake.rs checks it)");

    let mut clients: Vec<FrameClient<TcpStream>> = stacks
        .iter()
        .map(|s| support::connect_stack(s.handle.local_addr()))
        .collect::<io::Result<_>>()?;
    let results: Vec<RefCell<Applied>> = (0..2)
        .map(|_| {
            RefCell::new(Applied {
                fixed: Recorder::new(),
                negative: 0,
                missing: 0,
                over_half_period: 0,
                calls: 0,
                later_late: Recorder::new(),
                later_ontime: Recorder::new(),
                earlier_ontime: Recorder::new(),
            })
        })
        .collect();
    let floor_rec = RefCell::new(Recorder::new());
    let rng = RefCell::new(Rng::new(0x9e37_79b9_7f4a_7c15));
    let next_id = RefCell::new(100u32);
    let default_slack = common::timer_slack_ns()?;
    let allocs0 = audio_allocs.allocs();

    let warmup = (cfg.commands / 20).min(200);
    let scsynth = support::scsynth_from_env()?;
    let floor_calls = RefCell::new(0u64);
    // Floor samples above half a period: the machine's own share of "one wake-up late" (a
    // stalled vCPU delays the floor's sleep as it delays the network thread's).
    let floor_over = RefCell::new(0u64);
    let mut contenders: Vec<Contender<'_>> = Vec::new();
    let mut client_iter = clients.iter_mut();
    for (i, name) in [
        "param.set send → ack, wake_margin 50 µs",
        "param.set send → ack, default config (wake_margin 0)",
    ]
    .into_iter()
    .enumerate()
    {
        let c = client_iter.next().expect("two clients");
        let (tables, results, rng, next_id) = (&tables, &results, &rng, &next_id);
        contenders.push(Contender::new(name, move || {
            let pause = rng.borrow_mut().below(PERIOD_NS);
            std::thread::sleep(Duration::from_nanos(pause));
            let id = {
                let mut n = next_id.borrow_mut();
                *n = n.wrapping_add(1);
                *n
            };
            let mut out = [0u8; 256];
            let body = ParamSet {
                node: 1,
                param: 2,
                value: 0.5,
                ramp_ms: None,
            };
            let len = encode_frame(Some(id), &body, &mut out, 65_536).map_err(support::enc)?;
            let t0 = clock::now_ns();
            c.send_bytes(&out[..len])?;
            let sample = loop {
                let p = c.recv_frame()?;
                match ServerMessage::decode(p).map_err(support::enc)? {
                    (Some(r), ServerMessage::Ack(a)) if r == id => {
                        break a.sample.ok_or_else(|| support::enc("ack without sample"))?
                    }
                    (Some(r), m) if r == id => {
                        return Err(support::enc(format!("not an ack: {m:?}")))
                    }
                    _ => {}
                }
            };
            let t1 = clock::now_ns();
            let mut res = results[i].borrow_mut();
            res.calls += 1;
            if res.calls <= warmup {
                return Ok(Duration::from_nanos(t1 - t0));
            }
            match tables[i].get(sample / u64::from(FRAMES)) {
                Some((end, delta)) if t1 >= end => {
                    let delta = delta as i64;
                    let later = delta.max(0) as u64;
                    if t1 - end > PERIOD_NS / 2 {
                        res.over_half_period += 1;
                        res.later_late.record(Duration::from_nanos(later));
                    } else {
                        res.later_ontime.record(Duration::from_nanos(later));
                        let earlier = delta.min(0).unsigned_abs();
                        res.earlier_ontime.record(Duration::from_nanos(earlier));
                    }
                    res.fixed.record(Duration::from_nanos(t1 - end))
                }
                Some(_) => {
                    res.negative += 1;
                    res.fixed.record(Duration::ZERO);
                }
                None => res.missing += 1,
            }
            Ok(Duration::from_nanos(t1 - t0))
        }));
    }
    if let Some(sock) = &scsynth {
        let rng = &rng;
        contenders.push(Contender::new(
            "scsynth: OSC /status send → /status.reply (UDP), random moment in the period",
            move || {
                let pause = rng.borrow_mut().below(PERIOD_NS);
                std::thread::sleep(Duration::from_nanos(pause));
                let t0 = Instant::now();
                support::scsynth_status(sock)?;
                Ok(t0.elapsed())
            },
        ));
    }
    contenders.push(Contender::new(
        "floor: clock_nanosleep lateness (1 ns slack, client CPU) + ½ raw TCP round trip",
        || {
            let ahead = rng.borrow_mut().below(PERIOD_NS) + 1_000;
            common::set_timer_slack_ns(1)?;
            let late = common::sleep_lateness(Duration::from_nanos(ahead));
            common::set_timer_slack_ns(default_slack)?;
            let rt = raw.round_trip()?;
            let d = late? + rt / 2;
            let mut n = floor_calls.borrow_mut();
            *n += 1;
            if *n > warmup {
                floor_rec.borrow_mut().record(d);
                if d > Duration::from_nanos(PERIOD_NS / 2) {
                    *floor_over.borrow_mut() += 1;
                }
            }
            Ok(d)
        },
    ));
    let run = BenchConfig {
        rounds: cfg.commands,
        warmup,
        batch: 100,
        ..*base
    };
    let outcomes = common::run_interleaved(&mut contenders, &run);
    drop(contenders);
    let audio_allocs_n = audio_allocs.allocs() - allocs0;
    stop.store(true, Ordering::Relaxed);
    let (audios, periods, late_max) = audio_thread
        .join()
        .map_err(|_| io::Error::other("audio thread panicked"))?;
    let outcomes = outcomes?;
    common::print_table(
        &format!(
            "send → ack (client clock), {} commands per row, random send moment in the period; the floor row is the floor of the fixed cost below",
            cfg.commands
        ),
        &outcomes,
    );
    let floor = floor_rec.borrow().summary();
    println!(
        "floor: {} of {} samples above half a period ({:.2} %: the machine's own share of late wake-ups, to compare with the acks' below)",
        floor_over.borrow(),
        floor.count,
        100.0 * *floor_over.borrow() as f64 / floor.count.max(1) as f64
    );
    let mut fixed_rows = vec![Outcome {
        name: "floor: sleep lateness (1 ns slack) + ½ raw TCP round trip".into(),
        summary: floor,
        allocs_per_op: None,
    }];
    for (i, name) in [
        "fixed cost, wake_margin 50 µs",
        "fixed cost, default config (wake_margin 0)",
    ]
    .into_iter()
    .enumerate()
    {
        let r = results[i].borrow();
        fixed_rows.push(Outcome {
            name: name.into(),
            summary: r.fixed.summary(),
            allocs_per_op: None,
        });
        println!(
            "row {name}: {} of {} fixed costs above half a period ({:.2} %: the ack left one wake-up late), {} acks before the recorded callback end (recorded as 0), {} without a recorded callback",
            r.over_half_period,
            r.fixed.summary().count,
            100.0 * r.over_half_period as f64 / r.fixed.summary().count.max(1) as f64,
            r.negative,
            r.missing
        );
        let (l, o) = (r.later_late.summary(), r.later_ontime.summary());
        let e = r.earlier_ontime.summary();
        println!(
            "  how much earlier than predicted it started (on-time acks: the ack waits for the predicted end): p50 {} / p99 {} / mean {} µs",
            us(e.p50), us(e.p99), us(e.mean as u64)
        );
        println!(
            "  how much later than predicted the applying callback started: late acks p50 {} / p99 {} / max {} µs (n {}); on-time acks p50 {} / p99 {} / max {} µs (n {})",
            us(l.p50), us(l.p99), us(l.max), l.count, us(o.p50), us(o.p99), us(o.max), o.count
        );
    }
    common::print_table(
        "Fixed cost = ack received at client − end of the callback that applied it (same clock)",
        &fixed_rows,
    );
    println!(
        "\naudio thread: {periods} periods, max wake-up lateness {} µs, {audio_allocs_n} allocations during the measurement, {} commands applied",
        us(late_max),
        applied.load(Ordering::Relaxed)
    );
    print_scsynth_comparison(&outcomes);
    let scsynth = 87_000u64;
    for row in &fixed_rows[1..] {
        let r = ratio(row.summary.p50, floor.p50);
        println!(
            "Target ({}): p50 {} µs < scsynth 87 µs — {}; ≤ 1.3x floor p50 ({} µs): {r:.2}x — {}",
            row.name,
            us(row.summary.p50),
            verdict(row.summary.p50 < scsynth),
            us(floor.p50),
            verdict(r <= 1.3)
        );
    }
    drop((clients, raw));
    let _ = raw_t.join();
    for s in stacks {
        s.handle.shutdown();
    }
    drop(audios);
    Ok(())
}

// =============================================================================================

/// Our send → ack (default config) against scsynth's `/status` round trip of the same run, at
/// p50 and p99.9, when scsynth was measured.
fn print_scsynth_comparison(outcomes: &[Outcome]) {
    let find = |prefix: &str| outcomes.iter().find(|o| o.name.starts_with(prefix));
    let (Some(ours), Some(sc)) = (find("param.set send → ack, default"), find("scsynth")) else {
        return;
    };
    let (o, s) = (ours.summary, sc.summary);
    println!(
        "scsynth comparison (same run, send moments uniform over the period for both): send → ack p50 {} / p99 {} / p99.9 {} µs, scsynth /status p50 {} / p99 {} / p99.9 {} µs; ours ÷ scsynth {:.2}x / {:.2}x / {:.2}x — {}",
        us(o.p50), us(o.p99), us(o.p999), us(s.p50), us(s.p99), us(s.p999),
        ratio(o.p50, s.p50), ratio(o.p99, s.p99), ratio(o.p999, s.p999),
        verdict(o.p50 <= s.p50 && o.p999 <= s.p999)
    );
}

fn print_context(cfg: &StackConfig) -> io::Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "# loophole-ipc full-stack benchmark{}",
        if cfg.base.smoke {
            " (SMOKE RUN: not for figures)"
        } else {
            ""
        }
    );
    println!(
        "machine: {} CPUs, kernel {}, {}; load average {}",
        support::online_cpus(),
        kernel.trim(),
        support::cpu_model(),
        support::loadavg()
    );
    println!(
        "pinning: client + every server thread on CPU {} (servers spawned from the pinned thread inherit it); audio / stress threads on CPU {}",
        cfg.base.client_cpu, cfg.audio_cpu
    );
    println!(
        "default timer slack of the main thread: {} ns",
        common::timer_slack_ns()?
    );
    Ok(())
}

// =============================================================================================
// 4. Throughput.

/// Reads frames until `total` answers arrived (acks expected with consecutive refs from
/// `first_id`); counts everything else (telemetry, pongs). Returns (acks, out-of-order or error answers, other frames, time of last ack).
fn read_acks(
    mut s: TcpStream,
    first_id: u32,
    total: &AtomicU64,
) -> io::Result<(u64, u64, u64, Instant)> {
    let mut buf = vec![0u8; 70_000];
    let (mut acks, mut bad, mut other) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    let mut expect = first_id;
    loop {
        if acks + bad >= total.load(Ordering::Acquire) {
            return Ok((acks, bad, other, last));
        }
        let mut h = [0u8; 8];
        s.read_exact(&mut h)?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > buf.len() {
            return Err(support::enc(format!("frame of {len} bytes")));
        }
        s.read_exact(&mut buf[..len])?;
        match ServerMessage::decode(&buf[..len]).map_err(support::enc)? {
            (Some(r), ServerMessage::Ack(_)) if r == expect => {
                acks += 1;
                expect = expect.wrapping_add(1);
                last = Instant::now();
            }
            (_, ServerMessage::Pong(_)) => other += 1,
            (Some(_), _) => {
                bad += 1;
                expect = expect.wrapping_add(1);
            }
            _ => other += 1,
        }
    }
}

/// A compressed audio thread: callbacks back to back (no sleeping) until `stop`; counts the
/// commands applied. Returns the endpoint and the number of callbacks.
fn spawn_compressed_audio(
    mut audio: AudioEndpoint,
    cpu: usize,
    stop: Arc<AtomicBool>,
    applied: Arc<AtomicU64>,
) -> io::Result<std::thread::JoinHandle<(AudioEndpoint, u64)>> {
    std::thread::Builder::new()
        .name("sim-audio".into())
        .spawn(move || {
            let _ = common::pin_current_thread(cpu);
            // For profiling under valgrind, which runs one thread at a time: without a yield
            // the spinning audio thread starves the others.
            let yield_each = std::env::var_os("LOOPHOLE_BENCH_AUDIO_YIELD").is_some();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                audio.begin_callback(clock::now_ns(), FRAMES);
                let n = audio.drain(|_| RtOutcome::Applied);
                applied.fetch_add(n as u64, Ordering::Relaxed);
                audio.end_callback(clock::now_ns());
                k += 1;
                if yield_each {
                    std::thread::yield_now();
                }
            }
            (audio, k)
        })
}

/// Encodes `n` param.set frames with ids `first..` into `out` (cleared first).
fn param_frames(first: u32, n: u32, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    let mut f = [0u8; 256];
    for i in 0..n {
        let body = ParamSet {
            node: 1,
            param: 2,
            value: (i % 100) as f32 / 100.0,
            ramp_ms: None,
        };
        let len = encode_frame(Some(first.wrapping_add(i)), &body, &mut f, 65_536)
            .map_err(support::enc)?;
        out.extend_from_slice(&f[..len]);
    }
    Ok(())
}

fn section_throughput(cfg: &StackConfig) -> io::Result<()> {
    println!("\n## 4. Throughput\n");
    pipelined(cfg)?;
    telemetry_capacity(cfg)?;
    Ok(())
}

fn pipelined(cfg: &StackConfig) -> io::Result<()> {
    let mut stack = support::spawn_stack(
        Server::builder(),
        &RtConfig::default().with_sample_rate(RATE),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU64::new(0));
    let audio = spawn_compressed_audio(
        stack.audio.take().expect("audio"),
        cfg.audio_cpu,
        Arc::clone(&stop),
        Arc::clone(&applied),
    )?;
    let mut c = support::connect_stack(stack.handle.local_addr())?;
    let reader_stream = c.stream().try_clone()?;
    let n = cfg.pipeline;
    let first_id = 1_000u32;
    let total = Arc::new(AtomicU64::new(n));
    let reader = {
        let total = Arc::clone(&total);
        std::thread::spawn(move || read_acks(reader_stream, first_id, &total))
    };
    let a0 = stack.allocs.allocs();
    let chunk = 256u32;
    let mut buf = Vec::with_capacity(chunk as usize * 128);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(u64::from(chunk)) as u32;
        param_frames(first_id.wrapping_add(sent as u32), k, &mut buf)?;
        c.send_bytes(&buf)?;
        sent += u64::from(k);
    }
    let t_written = t0.elapsed();
    let (acks, bad, other, last) = reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))??;
    let elapsed = last.duration_since(t0);
    let allocs = stack.allocs.allocs() - a0;
    stop.store(true, Ordering::Relaxed);
    let (_audio, callbacks) = audio
        .join()
        .map_err(|_| io::Error::other("audio panicked"))?;
    let rate = acks as f64 / elapsed.as_secs_f64();
    println!(
        "### Pipelined param.set, one client (writer on CPU {} writes 256-frame chunks ahead, reader thread checks every ack in order), audio thread compressed on CPU {} (callbacks back to back, drain budget 32)\n",
        cfg.base.client_cpu, cfg.audio_cpu
    );
    println!("| commands sent | acks in order | wrong/missing | other frames | applied by audio | audio callbacks | elapsed s | commands/s | net allocs/cmd |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {acks} | {bad} | {other} | {} | {callbacks} | {:.3} | {rate:.0} | {:.4} |",
        applied.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        allocs as f64 / n.max(1) as f64
    );
    println!(
        "\nwriter finished after {:.3} s; all acknowledged, none lost: {}",
        t_written.as_secs_f64(),
        verdict(acks == n && bad == 0 && applied.load(Ordering::Relaxed) == n)
    );
    drop(c);
    stack.handle.shutdown();
    Ok(())
}

/// A `Driver` for a session driven outside the server: claims, routes nothing.
struct NullDriver;

impl loophole_ipc::session::Driver for NullDriver {
    fn claim(&mut self) -> bool {
        true
    }
    fn release(&mut self) {}
    fn route_audio(
        &mut self,
        _: u32,
        _: &loophole_ipc::message::Command,
    ) -> Result<(), loophole_ipc::session::RouteFull> {
        Err(loophole_ipc::session::RouteFull)
    }
    fn route_control(
        &mut self,
        _: u32,
        _: &loophole_ipc::message::Command,
    ) -> Result<(), loophole_ipc::session::RouteError> {
        Err(loophole_ipc::session::RouteError::Unavailable)
    }
    fn snapshot(&mut self) -> (TransportState, loophole_ipc::message::Health) {
        (
            TransportState {
                playing: false,
                position: 0,
                bpm: 120.0,
                loop_start: 0,
                loop_end: 0,
                loop_enabled: false,
            },
            loophole_ipc::message::Health {
                callbacks: 0,
                xruns: 0,
                dsp_load: 0.0,
                cmd_queue_len: 0,
                cmd_queue_capacity: 256,
                cmd_queue_high: 0,
                reply_queue_high: 0,
                telemetry_dropped: 0,
                telemetry_shed: 0,
            },
        )
    }
}

type BenchSession = loophole_ipc::session::Session<Vec<u8>, Vec<u8>>;

/// A session past `welcome`, as the server builds one (same buffer sizes as the defaults).
fn open_session() -> io::Result<BenchSession> {
    let welcome = loophole_ipc::message::Welcome {
        protocol: loophole_ipc::message::PROTOCOL_VERSION,
        engine: heapless::String::try_from("bench").unwrap_or_default(),
        instance: heapless::String::try_from("0123456789abcdef").unwrap_or_default(),
        sample_rate: RATE,
        block_size: FRAMES,
        max_frame: 65_536,
        heartbeat_ms: 0,
        timeout_ms: 0,
        attachments: false,
        taps: 0,
    };
    let scfg = loophole_ipc::session::SessionConfig {
        max_frame: 65_536,
        handshake_timeout: 5_000_000_000,
        heartbeat_interval: 1_000_000_000,
        heartbeat_timeout: 3_600_000_000_000,
        slow_consumer_timeout: 3_600_000_000_000,
        token: None,
        welcome: &welcome,
        attachments: false,
        taps: 0,
    };
    let now = clock::now_ns();
    let mut s = BenchSession::new(&scfg, vec![0u8; 8 + 65_536], vec![0u8; 256 * 1024], now)
        .map_err(support::enc)?;
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&common::wire::frame(&support::hello_payload(1)?));
    let space = s.rx_space();
    space[..input.len()].copy_from_slice(&input);
    s.rx_commit(input.len());
    s.poll(now, &mut NullDriver);
    if s.state() != loophole_ipc::session::SessionState::Open {
        return Err(io::Error::other(format!(
            "session not open: {:?}",
            s.state()
        )));
    }
    let n = s.tx_pending().len();
    s.tx_consumed(n, now);
    Ok(s)
}

fn meters64(rng: &mut Rng) -> Meters {
    let mut m = Meters {
        peak: heapless::Vec::new(),
        rms: heapless::Vec::new(),
    };
    for _ in 0..64 {
        let p = (rng.below(1_000_000) as f32) / 1_000_000.0;
        let _ = m.peak.push(p);
        let _ = m.rms.push(p * 0.7);
    }
    m
}

fn telemetry_capacity(cfg: &StackConfig) -> io::Result<()> {
    let frames = if cfg.base.smoke { 2_000 } else { 200_000 };
    let mut rng = Rng::new(42);
    let bodies: Vec<Meters> = (0..64).map(|_| meters64(&mut rng)).collect();
    // (a) encode into the session's transmit buffer only.
    let mut s = open_session()?;
    let t0 = Instant::now();
    let mut bytes = 0usize;
    for i in 0..frames {
        let now = clock::now_ns();
        if !s.send_telemetry(Stream::Meters, &bodies[i % bodies.len()], now) {
            return Err(io::Error::other("telemetry shed with an empty buffer"));
        }
        let n = s.tx_pending().len();
        bytes += n;
        s.tx_consumed(n, now);
    }
    let enc = t0.elapsed();
    // (b) encode + one write(2) per frame to a loopback socket drained by a reader thread.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let cpu = cfg.audio_cpu;
    let reader = std::thread::spawn(move || -> io::Result<(u64, u64)> {
        common::pin_current_thread(cpu)?;
        let (mut r, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, mut n_frames, mut need) = (0u64, 0u64, 0usize);
        let mut hdr = Vec::with_capacity(8);
        // Counts frames by walking headers across reads.
        loop {
            let k = r.read(&mut buf)?;
            if k == 0 {
                return Ok((total, n_frames));
            }
            total += k as u64;
            let mut at = 0;
            while at < k {
                if need > 0 {
                    let take = need.min(k - at);
                    need -= take;
                    at += take;
                    continue;
                }
                hdr.push(buf[at]);
                at += 1;
                if hdr.len() == 8 {
                    need = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
                    hdr.clear();
                    n_frames += 1;
                }
            }
        }
    });
    let mut w = servers::connect_tcp(addr)?;
    let mut s = open_session()?;
    let t0 = Instant::now();
    for i in 0..frames {
        let now = clock::now_ns();
        s.send_telemetry(Stream::Meters, &bodies[i % bodies.len()], now);
        let p = s.tx_pending();
        w.write_all(p)?;
        let n = p.len();
        s.tx_consumed(n, now);
    }
    let sock = t0.elapsed();
    drop(w);
    let (rx_bytes, rx_frames) = reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))??;
    let per = bytes as f64 / frames as f64;
    println!("\n### 64-channel meters frames out of one session (`Session::send_telemetry`, {frames} frames, {per:.0} B each on the wire)\n");
    println!("| what | frames/s | MB/s | µs/frame | frames received |");
    println!("|---|---:|---:|---:|---:|");
    for (name, d, rx) in [
        (
            "encode into the session transmit buffer only",
            enc,
            "-".to_string(),
        ),
        (
            "encode + one write(2) per frame, TCP loopback, reader on the other CPU",
            sock,
            format!("{rx_frames} ({rx_bytes} B)"),
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} | {rx} |",
            frames as f64 / d.as_secs_f64(),
            bytes as f64 / d.as_secs_f64() / 1e6,
            d.as_secs_f64() * 1e6 / frames as f64
        );
    }
    if rx_frames != frames as u64 {
        return Err(io::Error::other(format!(
            "telemetry: sent {frames} frames, received {rx_frames}"
        )));
    }
    println!("\n(The protocol caps a subscription at 120 frames/s; this is the engine-side encode+send capacity, not a subscription rate.)");
    Ok(())
}

// =============================================================================================
// 5. Worst case of the callback side.

fn section_worst(cfg: &StackConfig) -> io::Result<()> {
    let mut stack = support::spawn_stack(
        Server::builder(),
        &RtConfig::default()
            .with_sample_rate(RATE)
            .with_meter_channels(64),
    )?;
    let mut audio = stack.audio.take().expect("audio");
    let mut c = support::connect_stack(stack.handle.local_addr())?;
    let mut f = [0u8; 256];
    let subs = [
        (Stream::Meters, 120u16),
        (Stream::Transport, 120),
        (Stream::Health, 10),
    ];
    for (i, (stream, rate_hz)) in subs.into_iter().enumerate() {
        let len = encode_frame(
            Some(10 + i as u32),
            &Subscribe { stream, rate_hz },
            &mut f,
            65_536,
        )
        .map_err(support::enc)?;
        c.send_bytes(&f[..len])?;
        loop {
            match ServerMessage::decode(c.recv_frame()?).map_err(support::enc)? {
                (Some(r), ServerMessage::Ack(_)) if r == 10 + i as u32 => break,
                (Some(r), m) if r == 10 + i as u32 => {
                    return Err(support::enc(format!("subscribe refused: {m:?}")))
                }
                _ => {}
            }
        }
    }
    let first_id = 1_000u32;
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let audio_done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let s = c.stream().try_clone()?;
        let total = Arc::clone(&total);
        std::thread::spawn(move || read_acks(s, first_id, &total))
    };
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<Watched>>();
    let callbacks = cfg.callbacks;
    let cpu = cfg.audio_cpu;
    let audio_thread = {
        let (audio_done, stop) = (Arc::clone(&audio_done), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("sim-audio".into())
            .spawn(move || {
                let setup =
                    common::pin_current_thread(cpu).and_then(|_| support::watch(support::gettid()));
                let w = setup.as_ref().ok().copied();
                let _ = tx.send(setup);
                let mut endpoint = Recorder::new();
                let mut whole = Recorder::new();
                let mut empty = Recorder::new();
                let mut spin = Recorder::new();
                let mut buf = vec![0f32; 64 * FRAMES as usize];
                let mut transport = TransportState {
                    playing: true,
                    position: 0,
                    bpm: 120.0,
                    loop_start: 0,
                    loop_end: 0,
                    loop_enabled: false,
                };
                let (mut applied, mut max_cmds, mut k) = (0u64, 0usize, 0u64);
                let mut phase = 0.0f32;
                let a0 = w.map_or(0, |w| w.allocs());
                let mut a_measured = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = clock::now_ns();
                    audio.begin_callback(t0, FRAMES);
                    let n = audio.drain(|_| RtOutcome::Applied);
                    let t2 = clock::now_ns();
                    // "DSP": a ramp per channel, cheap but touching every sample.
                    for (ch, block) in buf.chunks_mut(FRAMES as usize).enumerate() {
                        let g = 0.5 + ch as f32 / 256.0;
                        let mut v = phase - 1.0;
                        for x in block.iter_mut() {
                            *x = g * v;
                            v += 0.01;
                            if v > 1.0 {
                                v -= 2.0;
                            }
                        }
                    }
                    phase = (phase + 1.28) % 2.0;
                    let t3 = clock::now_ns();
                    let chans: [&[f32]; 64] = std::array::from_fn(|ch| {
                        &buf[ch * FRAMES as usize..(ch + 1) * FRAMES as usize]
                    });
                    audio.publish_meters(&chans);
                    transport.position += u64::from(FRAMES);
                    audio.publish_transport(&transport);
                    let t4 = clock::now_ns();
                    audio.end_callback(t4);
                    let t5 = clock::now_ns();
                    let t6 = clock::now_ns();
                    let mut t7 = t6;
                    while t7 < t6 + SPIN_NS {
                        t7 = clock::now_ns();
                    }
                    if k < callbacks {
                        empty.record(Duration::from_nanos(t6 - t5));
                        spin.record(Duration::from_nanos(t7 - t6));
                        let ep = (t2 - t0) + (t5 - t3);
                        endpoint.record(Duration::from_nanos(ep));
                        whole.record(Duration::from_nanos(t5 - t0));
                        applied += n as u64;
                        max_cmds = max_cmds.max(n);
                        k += 1;
                        if k == callbacks {
                            a_measured = w.map_or(0, |w| w.allocs()) - a0;
                            audio_done.store(true, Ordering::Release);
                        }
                    }
                }
                (
                    audio, endpoint, whole, empty, spin, applied, max_cmds, a_measured,
                )
            })?
    };
    let w_audio = rx.recv().map_err(io::Error::other)??;
    let _ = w_audio;
    // Writer: pipelined param.set in 64-frame chunks until the measured callbacks are done.
    let mut buf = Vec::with_capacity(64 * 128);
    let mut sent = 0u64;
    let t0 = Instant::now();
    while !audio_done.load(Ordering::Acquire) {
        param_frames(first_id.wrapping_add(sent as u32), 64, &mut buf)?;
        c.send_bytes(&buf)?;
        sent += 64;
    }
    total.store(sent, Ordering::Release);
    // Nudge the reader past its last blocking read if everything already arrived: one ping.
    let (acks, bad, other, _) = {
        let ping = br#"{"type":"command","name":"ping","id":1,"body":{"nonce":1}}"#;
        c.send_frame(ping)?;
        reader
            .join()
            .map_err(|_| io::Error::other("reader panicked"))??
    };
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (_audio, endpoint, whole, empty, spin, applied, max_cmds, a_measured) = audio_thread
        .join()
        .map_err(|_| io::Error::other("audio panicked"))?;
    println!("\n## 5. Worst case of the callback side: {callbacks} compressed callbacks (= {:.1} min of 128/48k audio) with a client hammering\n", callbacks as f64 * PERIOD_NS as f64 / 60e9);
    println!(
        "client: pipelined param.set (64-frame chunks, {sent} sent in {secs:.2} s), meters + transport.state at 120 Hz, engine.health at 10 Hz; {acks} acks in order, {bad} wrong, {other} other frames (telemetry + pong)"
    );
    println!(
        "audio thread (CPU {cpu}): {applied} commands applied in the measured callbacks (max {max_cmds} in one), {a_measured} allocations; 64 channels x {FRAMES} frames metered, transport published every callback\n"
    );
    let rows = vec![
        Outcome {
            name: "baseline: two consecutive clock reads on the audio thread (machine preemption)"
                .into(),
            summary: empty.summary(),
            allocs_per_op: None,
        },
        Outcome {
            name: format!(
                "baseline: {} µs busy-wait window on the audio thread (what the machine adds to any window that long)",
                us(SPIN_NS)
            ),
            summary: spin.summary(),
            allocs_per_op: None,
        },
        Outcome {
            name: "endpoint work (begin + drain + publish_meters(64 ch) + publish_transport + end)"
                .into(),
            summary: endpoint.summary(),
            allocs_per_op: None,
        },
        Outcome {
            name: "whole callback (endpoint work + 64x128 sample fill)".into(),
            summary: whole.summary(),
            allocs_per_op: None,
        },
    ];
    common::print_table("Callback-side cost per callback", &rows);
    println!(
        "\np99.99: clock-read baseline {} µs, busy-wait baseline {} µs, endpoint {} µs, whole {} µs (period {} µs)",
        us(empty.quantile(0.9999)),
        us(spin.quantile(0.9999)),
        us(endpoint.quantile(0.9999)),
        us(whole.quantile(0.9999)),
        us(PERIOD_NS)
    );
    drop(c);
    stack.handle.shutdown();
    Ok(())
}

pub fn main() -> io::Result<()> {
    let cfg = StackConfig::from_env();
    support::alloc_counter_self_check()?;
    common::pin_current_thread(cfg.base.client_cpu)?;
    print_context(&cfg)?;
    if section_on("rt") {
        section_rt(&cfg)?;
    }
    if section_on("stress") {
        section_stress(&cfg)?;
    }
    if section_on("applied") {
        section_applied(&cfg)?;
    }
    if section_on("throughput") {
        section_throughput(&cfg)?;
    }
    if section_on("worst") {
        section_worst(&cfg)?;
    }
    println!("\nload average at end: {}", support::loadavg());
    Ok(())
}
