//! The tap table of `rt_callback` (issue 14): the audio thread's cost of one `publish_tap` of
//! a 128-frame block (target <= 200 ns) against a plain 128-sample copy in the same run, with
//! and without a concurrent reader. Each histogram entry is the mean of a batch of `TAP_BATCH`
//! calls (so the timer read, ~20 ns, is amortised). `RT_BENCH_CASE=name` runs one row (for
//! callgrind: `--toggle-collect='rt_callback::taps::one_tap'`).

use hdrhistogram::Histogram;
use loophole_ipc::rt::{bridge, RtConfig};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
/// Calls per timed batch in the tap table.
const TAP_BATCH: u64 = 32;
/// Frames per tap block (issue 14's target case).
const TAP_FRAMES: usize = 128;

#[derive(Clone, Copy, PartialEq)]
enum TapCase {
    /// Baseline: copy 128 `f32` into a local array.
    Copy,
    /// `publish_tap` of 128 frames, nobody reading.
    Publish,
    /// `publish_tap` of 128 frames while another thread reads the same tap in a loop.
    PublishWithReader,
}

const TAP_CASES: &[(&str, TapCase)] = &[
    ("copy 128 f32 (tap baseline)", TapCase::Copy),
    ("publish_tap 128 frames", TapCase::Publish),
    (
        "publish_tap 128, reader spinning",
        TapCase::PublishWithReader,
    ),
];

/// The measured unit of the tap table (never inlined, so callgrind can count it).
#[inline(never)]
fn one_tap(audio: &mut loophole_ipc::rt::AudioEndpoint, block: &[f32]) {
    let _ = audio.publish_tap(0, block);
}

#[inline(never)]
fn one_copy(dst: &mut [f32; TAP_FRAMES], block: &[f32]) {
    dst.copy_from_slice(block);
}

/// Prints the tap table (`RT_BENCH_CASE` selects one row).
pub fn rows(iters: u64) {
    let only = std::env::var("RT_BENCH_CASE").ok();
    let only = only.as_deref();
    let block: [f32; TAP_FRAMES] = core::array::from_fn(|i| (i as f32 * 0.1).sin());
    println!("\ntaps: {TAP_FRAMES}-frame block, per call (mean of batches of {TAP_BATCH})");
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7}",
        "case", "p50 ns", "p99 ns", "p99.9", "p99.99", "max ns", "mean ns", "x copy"
    );
    let mut baseline = None;
    for &(name, case) in TAP_CASES {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let h = run_tap(case, iters, &block);
        let base = *baseline.get_or_insert(h.mean());
        println!(
            "{:<34} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8.1} {:>7.1}",
            name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.value_at_quantile(0.9999),
            h.max(),
            h.mean(),
            h.mean() / base
        );
    }
}

fn run_tap(case: TapCase, iters: u64, block: &[f32; TAP_FRAMES]) -> Histogram<u64> {
    let (mut audio, mut net) = bridge(&RtConfig::default().with_taps(1, 4096));
    let mut reader = net.take_taps().expect("one tap configured");
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = (case == TapCase::PublishWithReader).then(|| {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut window = vec![0.0f32; 1024];
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                samples += reader
                    .latest(0, &mut window)
                    .map_or(0, |r| r.samples as u64);
            }
            black_box(samples);
        })
    });
    let mut h = Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds");
    let mut dst = [0.0f32; TAP_FRAMES];
    for _ in 0..iters.div_ceil(TAP_BATCH) {
        let t0 = Instant::now();
        for _ in 0..TAP_BATCH {
            match case {
                TapCase::Copy => one_copy(black_box(&mut dst), black_box(block)),
                _ => one_tap(&mut audio, black_box(block)),
            }
        }
        h.saturating_record((t0.elapsed().as_nanos() as u64).div_ceil(TAP_BATCH));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(spinner) = spinner {
        spinner.join().expect("tap reader");
    }
    black_box(dst);
    h
}
