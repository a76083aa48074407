//! Shared benchmark harness: thread pinning, timer slack, an hdrhistogram recorder in
//! nanoseconds, an interleaved A/B runner and a markdown table printer.
//!
//! Include it from a bench target with `mod common;` (the file is `benches/common/mod.rs`, so
//! cargo does not build it as a bench of its own).
//!
//! Adding a contender: build a [`Contender`] from a closure that performs ONE measured
//! operation (a round trip) and returns its duration, optionally with a closure that reads an
//! allocation counter, and pass it to [`run_interleaved`] together with the baseline. The
//! runner alternates small batches of every contender so machine drift cancels, and
//! [`print_table`] prints each contender's percentiles and ratios to the first one.
//!
//! Nothing here installs a global allocator: a binary can have only one, so an allocation
//! counter lives in the bench target itself (see `benches/floor.rs`).
#![allow(dead_code)] // each bench target uses a different subset of the harness
#![allow(unsafe_code)] // libc calls for affinity, timer slack and clocks

pub mod servers;
pub mod wire;

use hdrhistogram::Histogram;
use std::io;
use std::time::Duration;

/// Run settings, read from the environment by [`BenchConfig::from_env`].
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// CPU of the measuring (client) thread: `LOOPHOLE_BENCH_CPU`, default 0.
    pub client_cpu: usize,
    /// CPU of every server thread: `LOOPHOLE_BENCH_SERVER_CPU`, default = `client_cpu`.
    pub server_cpu: usize,
    /// Measured operations per contender: `LOOPHOLE_BENCH_ROUNDS`, default 100 000.
    pub rounds: u64,
    /// Operations per contender per turn of the interleaved runner: `LOOPHOLE_BENCH_BATCH`,
    /// default 1 000.
    pub batch: u64,
    /// Unrecorded operations per contender before measuring: 1/10 of `rounds`, at most 10 000.
    pub warmup: u64,
    /// Sleeps per variant of the wake-up floor: `LOOPHOLE_BENCH_SLEEPS`, default 20 000.
    pub sleeps: u64,
    /// True when the binary was not started by `cargo bench` (no `--bench` argument, e.g.
    /// `cargo test --benches`): every count is cut down to a quick smoke run.
    pub smoke: bool,
}

impl BenchConfig {
    /// Reads the `LOOPHOLE_BENCH_*` variables; a smoke run when `--bench` is not an argument.
    pub fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let client_cpu = env_u64("LOOPHOLE_BENCH_CPU", 0) as usize;
        let server_cpu = env_u64("LOOPHOLE_BENCH_SERVER_CPU", client_cpu as u64) as usize;
        let (rounds, sleeps) = if smoke {
            (
                env_u64("LOOPHOLE_BENCH_ROUNDS", 2_000),
                env_u64("LOOPHOLE_BENCH_SLEEPS", 200),
            )
        } else {
            (
                env_u64("LOOPHOLE_BENCH_ROUNDS", 100_000),
                env_u64("LOOPHOLE_BENCH_SLEEPS", 20_000),
            )
        };
        let batch = env_u64("LOOPHOLE_BENCH_BATCH", 1_000).max(1);
        Self {
            client_cpu,
            server_cpu,
            rounds,
            batch,
            warmup: (rounds / 10).min(10_000),
            sleeps,
            smoke,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().replace('_', "").parse().unwrap_or_else(|_| {
            eprintln!("warning: {name}={v:?} is not an unsigned integer, using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// Pins the calling thread to one CPU and checks that it now runs there.
///
/// Makes two system calls (`sched_setaffinity`, `sched_getcpu`); fails if the CPU does not
/// exist or is not in the process's allowed set.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU index too large",
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array for which all-zeroes is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE was checked above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; the pointer and size describe `set`, which
    // lives for the whole call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot pin a thread to CPU {cpu}: {e}"),
        ));
    }
    // SAFETY: sched_getcpu takes no argument and only reads the calling thread's state.
    let now = unsafe { libc::sched_getcpu() };
    if now != cpu as i32 {
        return Err(io::Error::other(format!(
            "pinned to CPU {cpu} but running on {now}"
        )));
    }
    Ok(())
}

/// Sets the calling thread's timer slack in nanoseconds (`prctl(PR_SET_TIMERSLACK)`).
/// `0` restores the thread's default slack (the value inherited at creation).
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and touches only the
    // calling thread's scheduling attributes.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's current timer slack in nanoseconds (`prctl(PR_GET_TIMERSLACK)`).
pub fn timer_slack_ns() -> io::Result<u64> {
    // SAFETY: PR_GET_TIMERSLACK takes no pointer; it returns the slack or -1.
    let rc = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as u64)
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `ahead` after now on CLOCK_MONOTONIC with an absolute deadline
/// (`clock_nanosleep(TIMER_ABSTIME)`) and returns how late the thread woke up.
pub fn sleep_lateness(ahead: Duration) -> io::Result<Duration> {
    let deadline = monotonic_ns() + ahead.as_nanos() as u64;
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        match rc {
            0 => break,
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(Duration::from_nanos(
        monotonic_ns().saturating_sub(deadline),
    ))
}

/// Latency percentiles of one contender, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// An hdrhistogram of durations in nanoseconds, 1 ns … 60 s, 3 significant digits.
/// Allocates at construction only.
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let hist =
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        Self { hist }
    }

    /// Records one duration; values above 60 s are clamped to 60 s.
    pub fn record(&mut self, d: Duration) {
        self.hist
            .saturating_record(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// The percentiles recorded so far.
    pub fn summary(&self) -> Summary {
        let h = &self.hist;
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One thing to measure: a closure doing one operation and returning its duration.
pub struct Contender<'a> {
    pub name: String,
    op: Box<dyn FnMut() -> io::Result<Duration> + 'a>,
    allocs: Option<Box<dyn Fn() -> u64 + 'a>>,
    before_batch: Option<Box<dyn FnMut() -> io::Result<()> + 'a>>,
}

impl<'a> Contender<'a> {
    /// `op` performs one measured operation (e.g. a round trip) and returns how long it took;
    /// setup it does outside its own timed section is not counted.
    pub fn new(name: impl Into<String>, op: impl FnMut() -> io::Result<Duration> + 'a) -> Self {
        Self {
            name: name.into(),
            op: Box::new(op),
            allocs: None,
            before_batch: None,
        }
    }

    /// Adds a reader of a monotonically increasing allocation counter (e.g. the server thread's);
    /// the runner reports its increase per measured operation.
    pub fn with_alloc_counter(mut self, read: impl Fn() -> u64 + 'a) -> Self {
        self.allocs = Some(Box::new(read));
        self
    }

    /// Adds a hook run before each of this contender's batches (warm-up included), outside the
    /// timed operations: e.g. to switch a background load on or off for this contender only.
    pub fn with_before_batch(mut self, hook: impl FnMut() -> io::Result<()> + 'a) -> Self {
        self.before_batch = Some(Box::new(hook));
        self
    }

    fn prepare(&mut self) -> io::Result<()> {
        match self.before_batch.as_mut() {
            Some(h) => h().map_err(|e| named(&self.name, e)),
            None => Ok(()),
        }
    }

    /// Runs the operation once, unrecorded (e.g. to check a reply before measuring).
    pub fn run_once(&mut self) -> io::Result<Duration> {
        (self.op)()
    }
}

/// What the runner measured for one contender.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub summary: Summary,
    /// Allocations per measured operation on the counted thread, if a counter was given.
    pub allocs_per_op: Option<f64>,
}

/// Runs every contender `cfg.warmup` times unrecorded, then `cfg.rounds` recorded times in
/// turns of `cfg.batch` operations, rotating which contender goes first at each turn, so that
/// slow drift of the machine (other load, frequency, cache state) hits all contenders alike.
///
/// The first error of any contender stops the run and is returned with its name.
pub fn run_interleaved(
    contenders: &mut [Contender<'_>],
    cfg: &BenchConfig,
) -> io::Result<Vec<Outcome>> {
    let n = contenders.len();
    for c in contenders.iter_mut() {
        c.prepare()?;
        for _ in 0..cfg.warmup {
            (c.op)().map_err(|e| named(&c.name, e))?;
        }
    }
    let mut recs: Vec<Recorder> = (0..n).map(|_| Recorder::new()).collect();
    let mut done = vec![0u64; n];
    let mut allocs = vec![0u64; n];
    let mut turn = 0usize;
    while done.iter().any(|&d| d < cfg.rounds) {
        for k in 0..n {
            let i = (turn + k) % n;
            let c = &mut contenders[i];
            let todo = cfg.batch.min(cfg.rounds - done[i]);
            if todo == 0 {
                continue;
            }
            c.prepare()?;
            let before = c.allocs.as_ref().map_or(0, |f| f());
            for _ in 0..todo {
                let d = (c.op)().map_err(|e| named(&c.name, e))?;
                recs[i].record(d);
            }
            allocs[i] += c.allocs.as_ref().map_or(0, |f| f()) - before;
            done[i] += todo;
        }
        turn += 1;
    }
    Ok(contenders
        .iter()
        .zip(recs)
        .zip(allocs)
        .map(|((c, r), a)| Outcome {
            name: c.name.clone(),
            summary: r.summary(),
            allocs_per_op: c
                .allocs
                .as_ref()
                .map(|_| a as f64 / cfg.rounds.max(1) as f64),
        })
        .collect())
}

fn named(name: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("contender {name:?}: {e}"))
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// Prints a markdown table: percentiles in µs, the p50 and p99 ratios to `outcomes[0]` (the
/// baseline), allocations per operation, and the count.
pub fn print_table(title: &str, outcomes: &[Outcome]) {
    println!("\n### {title}\n");
    println!("| contender | p50 µs | p99 µs | p99.9 µs | max µs | p50 / base | p99 / base | allocs/op | n |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let Some(base) = outcomes.first().map(|o| o.summary) else {
        return;
    };
    for o in outcomes {
        let s = o.summary;
        let allocs = o
            .allocs_per_op
            .map_or("-".to_string(), |a| format!("{a:.2}"));
        println!(
            "| {} | {} | {} | {} | {} | {:.2}x | {:.2}x | {} | {} |",
            o.name,
            us(s.p50),
            us(s.p99),
            us(s.p999),
            us(s.max),
            s.p50 as f64 / base.p50.max(1) as f64,
            s.p99 as f64 / base.p99.max(1) as f64,
            allocs,
            s.count
        );
    }
}
