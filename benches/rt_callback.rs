//! Cost of one audio callback's endpoint work, as a latency histogram.
//!
//! Each timed callback: `begin_callback`, `drain` of K queued commands (their acks pushed),
//! 64-channel meters over 64-frame blocks (where enabled), `publish_transport`,
//! `end_callback`. Between timed callbacks (untimed) the queue is refilled with K commands and
//! the replies are popped — or, in the `feeder` case, another thread does that concurrently.
//!
//! `cargo bench --bench rt_callback` runs 1 000 000 callbacks per case. Without `--bench` (as
//! under `cargo test --benches`) it runs 2 000 per case as a smoke test. `RT_BENCH_ITERS=n`
//! overrides the count; `RT_BENCH_CASE=name` runs one case (for callgrind, see README).

use hdrhistogram::Histogram;
use loophole_ipc::rt::{bridge, NetEndpoint, Outcome, RtCommand, RtConfig, RtOp, TransportState};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CHANNELS: usize = 64;
const FRAMES: usize = 64;

struct Case {
    name: &'static str,
    /// Commands per callback; `TIMER_ONLY` / `SPIN` mark the two machine baselines.
    commands: usize,
    meters: bool,
    feeder: bool,
}

/// Baseline: two clock reads around nothing.
const TIMER_ONLY: usize = usize::MAX;
/// Baseline: busy-wait `SPIN_NS` inside the timed window, no endpoint work. Its tail shows what
/// the machine (interrupts, hypervisor, other processes) adds to any window of that length.
const SPIN: usize = usize::MAX - 1;
const SPIN_NS: u64 = 750;

const CASES: &[Case] = &[
    Case {
        name: "timer-only (baseline)",
        commands: TIMER_ONLY,
        meters: false,
        feeder: false,
    },
    Case {
        name: "spin 750 ns (noise baseline)",
        commands: SPIN,
        meters: false,
        feeder: false,
    },
    Case {
        name: "0 cmds, no meters",
        commands: 0,
        meters: false,
        feeder: false,
    },
    Case {
        name: "0 cmds + 64ch meters",
        commands: 0,
        meters: true,
        feeder: false,
    },
    Case {
        name: "1 cmd + 64ch meters",
        commands: 1,
        meters: true,
        feeder: false,
    },
    Case {
        name: "16 cmds, no meters",
        commands: 16,
        meters: false,
        feeder: false,
    },
    Case {
        name: "16 cmds + 64ch meters",
        commands: 16,
        meters: true,
        feeder: false,
    },
    Case {
        name: "64 cmds + 64ch meters",
        commands: 64,
        meters: true,
        feeder: false,
    },
    Case {
        name: "16 cmds + meters, spinning feeder",
        commands: 16,
        meters: true,
        feeder: true,
    },
];

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let iters: u64 = std::env::var("RT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 1_000_000 } else { 2_000 });
    taps::rows(iters); // its own table (issue 14), before the callback table
    let only = std::env::var("RT_BENCH_CASE").ok();
    let blocks = signal();
    println!("rt_callback: {iters} callbacks per case, {CHANNELS} channels x {FRAMES} frames");
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>9} {:>7}",
        "case", "p50 ns", "p99 ns", "p99.9", "p99.99", "max ns", "mean ns", ">2us", "x base"
    );
    let mut baseline = None;
    for case in CASES {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let h = if case.feeder {
            run_feeder(case, iters, &blocks)
        } else {
            run(case, iters, &blocks)
        };
        let base = *baseline.get_or_insert(h.mean());
        println!(
            "{:<34} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8.1} {:>9} {:>7.1}",
            case.name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.value_at_quantile(0.9999),
            h.max(),
            h.mean(),
            h.count_between(2_001, u64::MAX),
            h.mean() / base
        );
    }
}

fn signal() -> Vec<[f32; FRAMES]> {
    let mut x = 0x1234_5678u32;
    (0..CHANNELS)
        .map(|_| {
            core::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
        })
        .collect()
}

fn config(budget: usize) -> RtConfig {
    let mut cfg = RtConfig::default();
    cfg.command_capacity = 256;
    cfg.reply_capacity = 512;
    cfg.drain_budget = budget;
    cfg.meter_channels = CHANNELS;
    cfg
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds")
}

fn command(id: u32) -> RtCommand {
    RtCommand {
        id,
        op: RtOp::ParamSet {
            node: id % 8,
            param: 1,
            value: 0.5,
            ramp_ms: 0.0,
        },
    }
}

fn engine(cmd: &RtCommand) -> Outcome {
    match cmd.op {
        RtOp::ParamSet { value, .. } if value.is_finite() => Outcome::Applied,
        _ => Outcome::Rejected(loophole_ipc::rt::RejectReason::OutOfRange),
    }
}

const TRANSPORT: TransportState = TransportState {
    playing: true,
    position: 0,
    bpm: 120.0,
    loop_start: 0,
    loop_end: 0,
    loop_enabled: false,
};

/// The measured unit: one callback's endpoint work (never inlined, so callgrind can count it).
#[inline(never)]
fn one_callback(
    audio: &mut loophole_ipc::rt::AudioEndpoint,
    now: u64,
    blocks: &[[f32; FRAMES]],
    meters: bool,
) -> usize {
    audio.begin_callback(now, FRAMES as u32);
    let n = audio.drain(engine);
    if meters {
        for (ch, block) in blocks.iter().enumerate() {
            audio.publish_meter(ch, block);
        }
    }
    audio.publish_transport(&TRANSPORT);
    audio.end_callback(now + 1000);
    n
}

fn refill(net: &mut NetEndpoint, id: &mut u32, k: usize) {
    for _ in 0..k {
        if net.try_send(command(*id)).is_ok() {
            *id = id.wrapping_add(1);
        }
    }
}

fn run(case: &Case, iters: u64, blocks: &[[f32; FRAMES]]) -> Histogram<u64> {
    let (mut audio, mut net) = bridge(&config(64));
    let mut h = histogram();
    let (mut id, mut peak, mut rms) = (0u32, [0.0f32; CHANNELS], [0.0f32; CHANNELS]);
    let origin = Instant::now();
    for i in 0..iters {
        let real = case.commands != SPIN && case.commands != TIMER_ONLY;
        if real {
            refill(&mut net, &mut id, case.commands);
        }
        let t0 = Instant::now();
        if real {
            let n = one_callback(&mut audio, i * 1_333_333, blocks, case.meters);
            debug_assert_eq!(n, case.commands);
            black_box(n);
        } else if case.commands == SPIN {
            while (t0.elapsed().as_nanos() as u64) < SPIN_NS {
                std::hint::spin_loop();
            }
        }
        let t1 = Instant::now();
        h.saturating_record((t1 - t0).as_nanos() as u64);
        while net.pop_reply().is_some() {}
        if i % 256 == 0 {
            net.take_meters(&mut peak, &mut rms);
        }
    }
    black_box((peak, origin));
    h
}

/// A feeder thread keeps K commands queued and pops replies while the audio side runs
/// back-to-back callbacks (cross-core cache traffic included).
fn run_feeder(case: &Case, iters: u64, blocks: &[[f32; FRAMES]]) -> Histogram<u64> {
    // Budget K: the feeder keeps up to 4K queued, each callback takes at most K.
    let (mut audio, mut net) = bridge(&config(case.commands));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = Arc::clone(&stop);
        let ready = Arc::clone(&ready);
        let k = case.commands;
        std::thread::spawn(move || {
            let mut id = 0u32;
            let mut loops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                loops += 1;
                let queued = net.commands_in_flight();
                if queued < 4 * k {
                    refill(&mut net, &mut id, k);
                }
                ready.store(true, Ordering::Release);
                while net.pop_reply().is_some() {}
                std::hint::spin_loop();
            }
            eprintln!("  (feeder: {loops} loops, {id} commands sent)");
        })
    };
    while !ready.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let mut h = histogram();
    let mut handled = 0u64;
    for i in 0..iters {
        let t0 = Instant::now();
        handled += one_callback(&mut audio, i * 1_333_333, blocks, case.meters) as u64;
        h.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().expect("feeder");
    eprintln!(
        "  (feeder case: {:.1} commands per callback on average)",
        handled as f64 / iters as f64
    );
    h
}

#[path = "rt_callback/taps.rs"]
mod taps;
