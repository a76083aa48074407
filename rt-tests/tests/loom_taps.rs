//! Model check of the tap ring protocol (`src/rt/tap.rs`) with loom: under every interleaving
//! (and every value a Relaxed load may legally return) the reader returns only samples that
//! were published at their index, never a torn one, and every sample is returned or counted
//! missed exactly once.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p rt-tests --test loom_taps --release`
//! (without `--cfg loom` this file compiles to nothing).
#![cfg(loom)]

use loophole_ipc::rt::tap::{tap_bank, TapRead, TapReader, MIN_TAP_CAPACITY};

/// Blocks the writer publishes; each sample's value is its index in the tap's stream.
const BLOCKS: u64 = 3;
/// Samples per block: three blocks overrun a ring of MIN_TAP_CAPACITY (16) once, by 8.
const BLOCK: usize = 8;
const TOTAL: u64 = BLOCKS * BLOCK as u64;

/// Reader-side bookkeeping: what came back, checked sample by sample.
#[derive(Default)]
struct Seen {
    returned: u64,
    missed: u64,
    end: u64,
    torn: Option<String>,
}

fn account(seen: &mut Seen, got: TapRead, out: &[f32]) {
    assert_eq!(got.first, seen.end + got.missed, "read not contiguous");
    for (i, &x) in out[..got.samples].iter().enumerate() {
        let index = got.first + i as u64;
        if x != index as f32 && seen.torn.is_none() {
            seen.torn = Some(format!("sample {index} read as {x}"));
        }
    }
    seen.returned += got.samples as u64;
    seen.missed += got.missed;
    seen.end = got.first + got.samples as u64;
}

fn model(read: fn(&mut TapReader, &mut [f32]) -> TapRead) -> Option<String> {
    let (mut w, mut r) = tap_bank(1, MIN_TAP_CAPACITY);
    assert_eq!(r.capacity(), 16);
    let writer = loom::thread::spawn(move || {
        for b in 0..BLOCKS {
            let block: [f32; BLOCK] =
                core::array::from_fn(|i| (b * BLOCK as u64 + i as u64) as f32);
            w.publish(0, &block).unwrap();
        }
        w
    });
    let mut seen = Seen::default();
    let mut out = [0.0f32; 16];
    for _ in 0..2 {
        let got = read(&mut r, &mut out);
        account(&mut seen, got, &out);
    }
    drop(writer.join().unwrap());
    let got = read(&mut r, &mut out);
    account(&mut seen, got, &out);
    if seen.torn.is_none() {
        assert_eq!(seen.end, TOTAL, "the final read did not reach the end");
        assert_eq!(
            seen.returned + seen.missed,
            TOTAL,
            "a sample was lost from the accounting or counted twice"
        );
        assert!(seen.returned >= 16, "the last ring-full must be readable");
    }
    seen.torn
}

static EXPLORED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    // Bounded preemptions keep the run in seconds; the torn case needs one (below).
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

#[test]
fn reader_never_returns_a_torn_sample() {
    builder().check(|| {
        EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(torn) = model(|r, out| r.read(0, out).unwrap()) {
            panic!("torn read returned: {torn}");
        }
    });
    let explored = EXPLORED.load(std::sync::atomic::Ordering::Relaxed);
    println!("loom explored {explored} interleavings");
    assert!(explored > 10, "loom explored too few interleavings");
}

/// Negative control: the same reader without the claim check (trusting `published` alone)
/// returns a sample the writer was overwriting, and loom finds the interleaving.
#[test]
#[should_panic(expected = "torn read returned")]
fn reader_without_the_claim_check_is_caught() {
    builder().check(|| {
        if let Some(torn) = model(|r, out| r.read_unchecked(0, out).unwrap()) {
            panic!("torn read returned: {torn}");
        }
    });
}
