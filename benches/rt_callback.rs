//! Cost of one audio callback's endpoint work, as a latency histogram.
//!
//! Each timed callback: `begin_callback`, `drain` of K queued commands (their acks pushed),
//! meters of 64, 256 or 512 channels over 64-frame blocks (where enabled; one case feeds a quiet
//! signal of |x| <= 1e-20, whose squares are subnormal in f32), `publish_transport`,
//! `end_callback`. Between timed callbacks (untimed) the queue is refilled with K commands and
//! the replies are popped — or, in the `feeder` case, another thread does that concurrently.
//!
//! `cargo bench --bench rt_callback` runs 1 000 000 callbacks per case. Without `--bench` (as
//! under `cargo test --benches`) it runs 2 000 per case as a smoke test. `RT_BENCH_ITERS=n`
//! overrides the count; `RT_BENCH_CASE=name` runs one case (for callgrind, see README).
//!
//! After the table: the quiet/normal ratio, the cost per channel at 64/256/512 channels, and the
//! network side's encode cost of one `meters` frame at 64/256/512 channels, all from this run.

use hdrhistogram::Histogram;
use loophole_ipc::frame::DEFAULT_MAX_FRAME;
use loophole_ipc::message::{encode_frame, Meters};
use loophole_ipc::rt::{
    bridge, NetEndpoint, Outcome, RtCommand, RtConfig, RtOp, TransportState, MAX_METER_CHANNELS,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Channels of the signal (the most any case meters).
const CHANNELS: usize = MAX_METER_CHANNELS;
const FRAMES: usize = 64;
/// Amplitude of the quiet signal: squares of 1e-20 are 1e-40, subnormal in f32.
const QUIET: f32 = 1e-20;

struct Case {
    name: &'static str,
    /// Commands per callback; `TIMER_ONLY` / `SPIN` mark the two machine baselines.
    commands: usize,
    meters: bool,
    feeder: bool,
    /// Metered channels (where `meters`).
    channels: usize,
    /// Feed the quiet signal (|x| <= 1e-20) instead of the full-scale one.
    quiet: bool,
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
        channels: 64,
        quiet: false,
    },
    Case {
        name: "spin 750 ns (noise baseline)",
        commands: SPIN,
        meters: false,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "0 cmds, no meters",
        commands: 0,
        meters: false,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "0 cmds + 64ch meters",
        commands: 0,
        meters: true,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "1 cmd + 64ch meters",
        commands: 1,
        meters: true,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "16 cmds, no meters",
        commands: 16,
        meters: false,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "16 cmds + 64ch meters",
        commands: 16,
        meters: true,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "64 cmds + 64ch meters",
        commands: 64,
        meters: true,
        feeder: false,
        channels: 64,
        quiet: false,
    },
    Case {
        name: "16 cmds + meters, spinning feeder",
        commands: 16,
        meters: true,
        feeder: true,
        channels: 64,
        quiet: false,
    },
    Case {
        name: QUIET_CASE,
        commands: 0,
        meters: true,
        feeder: false,
        channels: 64,
        quiet: true,
    },
    Case {
        name: "0 cmds + 256ch meters",
        commands: 0,
        meters: true,
        feeder: false,
        channels: 256,
        quiet: false,
    },
    Case {
        name: "0 cmds + 512ch meters",
        commands: 0,
        meters: true,
        feeder: false,
        channels: 512,
        quiet: false,
    },
    Case {
        name: "16 cmds + 512ch meters",
        commands: 16,
        meters: true,
        feeder: false,
        channels: 512,
        quiet: false,
    },
];

const QUIET_CASE: &str = "0 cmds + 64ch meters, 1e-20 input";

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let iters: u64 = std::env::var("RT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 1_000_000 } else { 2_000 });
    taps::rows(iters); // its own table (issue 14), before the callback table
    let only = std::env::var("RT_BENCH_CASE").ok();
    let loud = signal(1.0);
    let quiet = signal(QUIET);
    println!(
        "rt_callback: {iters} callbacks per case, up to {CHANNELS} channels x {FRAMES} frames"
    );
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>9} {:>7}",
        "case", "p50 ns", "p99 ns", "p99.9", "p99.99", "max ns", "mean ns", ">2us", "x base"
    );
    let mut baseline = None;
    let mut means: Vec<(&str, f64, u64)> = Vec::new();
    for case in CASES {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let all = if case.quiet { &quiet } else { &loud };
        let blocks = &all[..case.channels];
        let h = if case.feeder {
            run_feeder(case, iters, blocks)
        } else {
            run(case, iters, blocks)
        };
        means.push((case.name, h.mean(), h.value_at_quantile(0.5)));
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
    summary(&means);
    encode_costs(if bench_mode { 200_000 } else { 200 });
}

/// Ratios between cases of this run (only those that ran).
fn summary(means: &[(&str, f64, u64)]) {
    let get = |name: &str| means.iter().find(|m| m.0 == name).map(|m| (m.1, m.2));
    let (Some(empty), Some(normal)) = (get("0 cmds, no meters"), get("0 cmds + 64ch meters"))
    else {
        return;
    };
    if let Some(q) = get(QUIET_CASE) {
        println!(
            "quiet (1e-20) / normal input, 64ch meters: mean {:.3}x, p50 {:.3}x (target <= 1.1x)",
            q.0 / normal.0,
            q.1 as f64 / normal.1 as f64
        );
    }
    for (n, name) in [
        (64, "0 cmds + 64ch meters"),
        (256, "0 cmds + 256ch meters"),
        (512, "0 cmds + 512ch meters"),
    ] {
        if let Some(m) = get(name) {
            println!(
                "{n:>3} channels: p50 {:>6} ns per callback, {:.2} ns per channel beyond the empty callback, {:.2}x the 64ch case",
                m.1,
                (m.1 as f64 - empty.1 as f64) / n as f64,
                m.1 as f64 / normal.1 as f64
            );
        }
    }
}

/// The network thread's cost of encoding one `meters` frame (envelope + length prefix) at 64,
/// 256 and 512 channels, with values of realistic length; ratio to 64 channels.
fn encode_costs(frames: u32) {
    let mut out = vec![0u8; 8 + DEFAULT_MAX_FRAME as usize];
    let mut base = None;
    for n in [64usize, 256, 512] {
        let values: Vec<f32> = signal(1.0)[0]
            .iter()
            .cycle()
            .take(n)
            .map(|x| x.abs())
            .collect();
        let body = Meters {
            peak: heapless::Vec::from_slice(&values).expect("capacity"),
            rms: heapless::Vec::from_slice(&values).expect("capacity"),
        };
        let mut len = 0;
        let t = Instant::now();
        for i in 0..frames {
            len = encode_frame(Some(i), black_box(&body), &mut out, DEFAULT_MAX_FRAME)
                .expect("fits max_frame");
            black_box(&out[..len]);
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(frames);
        let b = *base.get_or_insert(ns);
        println!(
            "encode meters frame, {n:>3} channels: {ns:>9.0} ns, {len:>6} bytes ({:.1}% of max_frame), {:.2}x the 64ch frame",
            100.0 * len as f64 / f64::from(DEFAULT_MAX_FRAME),
            ns / b
        );
    }
}

fn signal(scale: f32) -> Vec<[f32; FRAMES]> {
    let mut x = 0x1234_5678u32;
    (0..CHANNELS)
        .map(|_| {
            core::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale
            })
        })
        .collect()
}

fn config(budget: usize, channels: usize) -> RtConfig {
    let mut cfg = RtConfig::default();
    cfg.command_capacity = 256;
    cfg.reply_capacity = 512;
    cfg.drain_budget = budget;
    cfg.meter_channels = channels;
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
    let (mut audio, mut net) = bridge(&config(64, case.channels));
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
    let (mut audio, mut net) = bridge(&config(case.commands, case.channels));
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
