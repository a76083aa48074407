//! Floors the IPC core is measured against, in one process run:
//!
//! 1. ping-pong round trip of a real `ping` frame (66 bytes) and a `pong`-sized reply (86
//!    bytes) over (a) blocking TCP loopback, the floor; (b) a Unix stream socket; (c) a mio
//!    event loop with the same fixed pong; (d) a tokio current-thread server with
//!    `LengthDelimitedCodec` and serde_json structs. The client is the
//!    same blocking [`common::wire::FrameClient`] for all. Contenders run interleaved in batches.
//! 2. wake-up lateness of `clock_nanosleep(TIMER_ABSTIME)` 200 µs ahead, default timer slack
//!    vs 1 ns slack: the fixed cost under any "command applied at the next block" latency.
//!
//! `cargo bench --bench floor`; `LOOPHOLE_BENCH_CPU`, `LOOPHOLE_BENCH_SERVER_CPU`,
//! `LOOPHOLE_BENCH_ROUNDS`, `LOOPHOLE_BENCH_BATCH`, `LOOPHOLE_BENCH_SLEEPS` tune it (see
//! `common::BenchConfig`). Without `--bench` (e.g. `cargo test --benches`) it is a smoke run.
#![warn(clippy::undocumented_unsafe_blocks)]

mod common;

use common::servers::{self, OnStart, ServerThread};
use common::wire::{check_pong, FrameClient, PING_JSON};
use common::{BenchConfig, Contender};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts `alloc`, `alloc_zeroed` and `realloc` calls made by threads that registered a
/// counter with [`track_this_thread`]; frees are not counted. Everything is served by `System`.
struct CountingAlloc;

thread_local! {
    static TRACK: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

/// Every counted allocation of the process, tracked threads or not.
static ALL_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Allocations of the whole process so far. For a contender whose server thread cannot run
/// [`track_this_thread`] (e.g. a thread spawned inside the crate under test), the increase of
/// this counter over its batches is its allocations per round trip: the client allocates
/// nothing (checked by [`client_alloc_check`]) and the other servers are blocked in `read`.
/// [`process_counter_check`] shows both counters agree on the tokio contender.
fn process_allocs() -> u64 {
    ALL_ALLOCS.load(Ordering::Relaxed)
}

fn count_one() {
    ALL_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // try_with: no panic while the thread-local is being torn down. The const initializer and
    // the absence of Drop mean this access never allocates (no recursion into the allocator).
    let _ = TRACK.try_with(|t| {
        if let Some(c) = t.get() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract is exactly System's; counting touches only an atomic.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees about `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees about `layout`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded; `ptr` came from this allocator, i.e. from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from this allocator, i.e. from System.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A fresh counter, leaked so any thread can hold it for the rest of the process.
fn new_counter() -> &'static AtomicU64 {
    Box::leak(Box::new(AtomicU64::new(0)))
}

/// From now on, allocations made by the calling thread increment `c`.
fn track_this_thread(c: &'static AtomicU64) {
    TRACK.with(|t| t.set(Some(c)));
}

fn tracked(c: &'static AtomicU64) -> OnStart {
    Box::new(move || track_this_thread(c))
}

/// The counter must be able to fail: an allocation on a tracked thread must show, one on an
/// untracked thread must not.
fn alloc_counter_self_check() -> io::Result<()> {
    let c = new_counter();
    let other = std::thread::spawn(|| std::hint::black_box(vec![1u8; 64]).len());
    let _ = other.join();
    track_this_thread(c);
    let v = std::hint::black_box(vec![1u8; 64]);
    TRACK.with(|t| t.set(None));
    drop(v);
    match c.load(Ordering::Relaxed) {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "alloc counter self-check: counted {n}, expected 1"
        ))),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split(':').nth(1).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// `/proc/loadavg`'s first three fields: other load on the machine is part of every figure.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn online_cpus() -> i64 {
    // SAFETY: sysconf takes an integer name and reads no memory of ours.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

fn print_context(cfg: &BenchConfig) -> io::Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "# loophole-ipc floor benchmark{}",
        if cfg.smoke {
            " (SMOKE RUN: not for figures)"
        } else {
            ""
        }
    );
    println!(
        "machine: {} CPUs, kernel {}, {}",
        online_cpus(),
        kernel.trim(),
        cpu_model()
    );
    println!(
        "pinning: client thread on CPU {}, every server thread on CPU {} (same CPU: {})",
        cfg.client_cpu,
        cfg.server_cpu,
        cfg.client_cpu == cfg.server_cpu
    );
    println!(
        "rounds per contender: {} (+{} warm-up), interleaved in batches of {}; default timer slack {} ns",
        cfg.rounds,
        cfg.warmup,
        cfg.batch,
        common::timer_slack_ns()?
    );
    Ok(())
}

/// One unrecorded round trip whose reply must be the expected pong.
fn first_pong<S: io::Read + io::Write>(name: &str, c: &mut FrameClient<S>) -> io::Result<()> {
    c.round_trip()
        .and_then(|_| check_pong(c.last_reply()))
        .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))
}

/// Spawns the baseline servers, connects one client to each, checks one pong from each,
/// runs them interleaved and prints the table.
fn ping_pong(cfg: &BenchConfig) -> io::Result<()> {
    let [tcp_allocs, uds_allocs, mio_allocs, tokio_allocs] = [(); 4].map(|_| new_counter());
    let mut threads: Vec<ServerThread> = Vec::new();

    let (addr, t) = servers::spawn_raw_tcp(cfg.server_cpu, tracked(tcp_allocs))?;
    threads.push(t);
    let mut tcp = FrameClient::new(servers::connect_tcp(addr)?, PING_JSON)?;
    let (uaddr, t) = servers::spawn_raw_uds(cfg.server_cpu, tracked(uds_allocs))?;
    threads.push(t);
    let mut uds = FrameClient::new(servers::connect_uds(&uaddr)?, PING_JSON)?;
    let (addr, t) = servers::spawn_raw_mio(cfg.server_cpu, tracked(mio_allocs))?;
    threads.push(t);
    let mut mio = FrameClient::new(servers::connect_tcp(addr)?, PING_JSON)?;
    let (addr, t) = servers::spawn_tokio(cfg.server_cpu, tracked(tokio_allocs))?;
    threads.push(t);
    let mut tok = FrameClient::new(servers::connect_tcp(addr)?, PING_JSON)?;

    first_pong("raw tcp", &mut tcp)?;
    first_pong("raw uds", &mut uds)?;
    first_pong("raw mio", &mut mio)?;
    first_pong("tokio", &mut tok)?;
    client_alloc_check(&mut [&mut tcp as &mut dyn RoundTrip, &mut uds, &mut mio, &mut tok])?;

    let load = |c: &'static AtomicU64| move || c.load(Ordering::Relaxed);
    let mut contenders = vec![
        Contender::new("raw TCP, blocking std (floor)", || tcp.round_trip())
            .with_alloc_counter(load(tcp_allocs)),
        Contender::new("raw Unix socket, blocking std", || uds.round_trip())
            .with_alloc_counter(load(uds_allocs)),
        Contender::new("raw TCP, mio event loop", || mio.round_trip())
            .with_alloc_counter(load(mio_allocs)),
        Contender::new(
            "tokio current_thread + LengthDelimitedCodec + serde_json",
            || tok.round_trip(),
        )
        .with_alloc_counter(load(tokio_allocs)),
    ];
    let outcomes = common::run_interleaved(&mut contenders, cfg)?;
    drop(contenders);
    process_counter_check(&mut tok, tokio_allocs)?;
    common::print_table(
        &format!(
            "Ping-pong round trip, ping 66 B / pong 86 B on the wire, client CPU {} server CPU {}; allocs/op = server thread",
            cfg.client_cpu, cfg.server_cpu
        ),
        &outcomes,
    );

    drop((tcp, uds, mio, tok)); // EOF makes every server return
    for t in threads {
        let name = t.thread().name().unwrap_or("?").to_string();
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("server {name}: {e}"))),
            Err(_) => return Err(io::Error::other(format!("server {name} panicked"))),
        }
    }
    Ok(())
}

/// Object-safe view of a client for [`client_alloc_check`].
trait RoundTrip {
    fn rt(&mut self) -> io::Result<Duration>;
}

impl<S: io::Read + io::Write> RoundTrip for FrameClient<S> {
    fn rt(&mut self) -> io::Result<Duration> {
        self.round_trip()
    }
}

/// The client is the same for every contender and must not allocate per round trip, or it
/// would blur the comparison: 1 000 round trips per client with the calling thread tracked.
fn client_alloc_check(clients: &mut [&mut dyn RoundTrip]) -> io::Result<()> {
    let c = new_counter();
    track_this_thread(c);
    let mut result = Ok(());
    'all: for cl in clients.iter_mut() {
        for _ in 0..1_000 {
            if let Err(e) = cl.rt() {
                result = Err(e);
                break 'all;
            }
        }
    }
    TRACK.with(|t| t.set(None));
    result?;
    match c.load(Ordering::Relaxed) {
        0 => {
            println!(
                "client check: 0 allocations in {} client round trips",
                1_000 * clients.len()
            );
            Ok(())
        }
        n => Err(io::Error::other(format!(
            "the bench client allocated {n} times in round trips"
        ))),
    }
}

/// 1 000 tokio round trips: the process-wide allocation count must rise exactly as much as the
/// tokio thread's own count, else [`process_allocs`] is no substitute for a per-thread counter.
fn process_counter_check(
    tok: &mut dyn RoundTrip,
    tokio_allocs: &'static AtomicU64,
) -> io::Result<()> {
    let (p0, t0) = (process_allocs(), tokio_allocs.load(Ordering::Relaxed));
    for _ in 0..1_000 {
        tok.rt()?;
    }
    let (p, t) = (
        process_allocs() - p0,
        tokio_allocs.load(Ordering::Relaxed) - t0,
    );
    println!("\nprocess-wide vs tokio-thread allocations over 1000 tokio round trips: {p} vs {t}");
    if p != t {
        println!(
            "WARNING: they differ; process-wide counts are not a clean substitute in this run"
        );
    }
    Ok(())
}

/// Sleep lateness to an absolute CLOCK_MONOTONIC deadline 200 µs ahead: default slack vs 1 ns.
fn wake_floor(cfg: &BenchConfig) -> io::Result<()> {
    let default_slack = common::timer_slack_ns()?;
    let ahead = Duration::from_micros(200);
    let with_slack = |ns: u64| {
        move || {
            common::set_timer_slack_ns(ns)?;
            common::sleep_lateness(ahead)
        }
    };
    let mut contenders = vec![
        Contender::new(
            format!("default timer slack ({default_slack} ns)"),
            with_slack(default_slack),
        ),
        Contender::new("PR_SET_TIMERSLACK 1 ns", with_slack(1)),
    ];
    let run = BenchConfig {
        rounds: cfg.sleeps,
        warmup: (cfg.sleeps / 20).min(500),
        ..*cfg
    };
    let outcomes = common::run_interleaved(&mut contenders, &run);
    common::set_timer_slack_ns(default_slack)?;
    common::print_table(
        &format!("Wake-up lateness of clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) 200 µs ahead, CPU {}", cfg.client_cpu),
        &outcomes?,
    );
    Ok(())
}

pub fn main() -> io::Result<()> {
    let cfg = BenchConfig::from_env();
    let load_start = loadavg();
    alloc_counter_self_check()?;
    common::pin_current_thread(cfg.client_cpu)?;
    print_context(&cfg)?;
    ping_pong(&cfg)?;
    wake_floor(&cfg)?;
    println!(
        "\nload average at start: {load_start}; at end: {}",
        loadavg()
    );
    Ok(())
}
