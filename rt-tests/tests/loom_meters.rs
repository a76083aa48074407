//! Model check of the meter hand-over protocol (`src/rt/meters.rs`) with loom.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p rt-tests --test loom_meters --release`
//! (without `--cfg loom` this file compiles to nothing).
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loophole_ipc::rt::meters::{meter_bank, MeterReader};

#[derive(Default, Debug)]
struct Totals {
    count: [u64; 2],
    sum_sq: [f64; 2],
    peak: f32,
}

fn collect(r: &mut MeterReader, t: &mut Totals) -> bool {
    let (mut p, mut s, mut c) = ([0.0f32; 2], [0.0f64; 2], [0u64; 2]);
    if r.take_raw(&mut p, &mut s, &mut c) == 0 {
        return false;
    }
    // One interval is consistent across channels: both channels got the same blocks.
    assert_eq!(c[0], c[1], "torn interval: counts differ across channels");
    assert_eq!(s[0], s[1], "torn interval: sums differ across channels");
    assert_eq!(p[0], p[1], "torn interval: peaks differ across channels");
    // Within a channel, peak/sum/count describe the same blocks (values 1.0, 2.0, 3.0).
    assert_eq!(
        c[0] == 0,
        p[0] == 0.0,
        "count and peak from different intervals"
    );
    for ch in 0..2 {
        t.count[ch] += c[ch];
        t.sum_sq[ch] += s[ch];
    }
    t.peak = t.peak.max(p[0]);
    true
}

static EXPLORED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn every_block_lands_in_exactly_one_consistent_interval() {
    loom::model(|| {
        EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mut w, mut r) = meter_bank(2);
        let writer = loom::thread::spawn(move || {
            for v in [1.0f32, 2.0, 3.0] {
                w.begin();
                w.publish(0, &[v]);
                w.publish(1, &[v]);
                w.publish_load(v / 4.0);
            }
            w
        });
        let mut t = Totals::default();
        let mut load = 0.0f32;
        collect(&mut r, &mut t);
        r.collect(); // fold without taking
        load = load.max(r.take_load_max().unwrap_or(0.0));
        collect(&mut r, &mut t);
        let mut w = writer.join().unwrap();
        // Flush: each begin hands over the writer's bank once the reader asked.
        for _ in 0..4 {
            w.begin();
            collect(&mut r, &mut t);
        }
        load = load.max(r.take_load_max().unwrap_or(0.0));
        assert_eq!(load, 0.75, "the highest DSP load was lost");
        assert_eq!(t.count, [3, 3], "a block was lost or counted twice");
        assert_eq!(t.sum_sq, [14.0, 14.0]);
        assert_eq!(t.peak, 3.0);
    });
    let explored = EXPLORED.load(std::sync::atomic::Ordering::Relaxed);
    println!("loom explored {explored} interleavings");
    assert!(
        explored > 10,
        "loom explored too few interleavings to prove anything"
    );
}

/// Negative control: the obvious single-bank design (writer load+store, reader swap) loses or
/// double-counts under some interleaving, and loom finds it.
#[test]
#[should_panic(expected = "naive protocol")]
fn naive_single_bank_protocol_is_caught() {
    loom::model(|| {
        let count = Arc::new(AtomicU64::new(0));
        let c2 = Arc::clone(&count);
        let writer = loom::thread::spawn(move || {
            for _ in 0..2 {
                let old = c2.load(Ordering::Relaxed);
                c2.store(old + 1, Ordering::Relaxed);
            }
        });
        let taken = count.swap(0, Ordering::Acquire);
        writer.join().unwrap();
        let total = taken + count.load(Ordering::Relaxed);
        assert_eq!(total, 2, "naive protocol lost or double-counted a block");
    });
}
