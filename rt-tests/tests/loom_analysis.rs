//! Model check of the analysis mailbox (`src/rt/analysis.rs`, the triple buffer between the
//! engine's analysis worker and the network thread) with loom: under every interleaving (and
//! every value a Relaxed load may legally return) the network side takes only whole values
//! (every float of a value is the one submitted with it, never a mix of two submissions), the
//! submission count never goes back, and the newest value is the one left in the mailbox.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p rt-tests --test loom_analysis --release`
//! (without `--cfg loom` this file compiles to nothing). Negative control: the same model on the
//! build with `--cfg loophole_weak_ordering` (the hand-over swaps `Relaxed`) must fail
//! (`scripts/test.d/15-rt.sh`).
#![cfg(loom)]

use loophole_ipc::rt::analysis::{analysis_bank_sized, AnalysisFrame, AnalysisKey, AnalysisStream};

/// Values the worker submits; value k holds `[k, k]` and `sample = k`.
const SUBMITS: u64 = 3;

/// What the reader saw: the first broken value, if any.
fn check(seq: u64, sample: u64, values: &[f32], last_seq: &mut u64) -> Option<String> {
    if values.iter().any(|&v| v != sample as f32) || seq != sample {
        return Some(format!("torn: seq {seq} sample {sample} values {values:?}"));
    }
    if seq < *last_seq {
        return Some(format!("went back: {seq} after {last_seq}"));
    }
    *last_seq = seq;
    None
}

#[test]
fn the_network_side_only_takes_whole_values() {
    loom::model(|| {
        let (mut w, mut r) = analysis_bank_sized(2);
        let key = AnalysisKey {
            stream: AnalysisStream::Spectrum,
            tap: 0,
            size: 2,
        };
        r.set(0, Some((key, 30)));
        let req = w.requests().next().unwrap();
        let worker = loom::thread::spawn(move || {
            for k in 1..=SUBMITS {
                let v = [k as f32; 2];
                let frame = AnalysisFrame {
                    sample: k,
                    missed: 0,
                    param: 48_000,
                    values: &v,
                };
                w.submit(&req, &frame).unwrap();
            }
            w
        });
        let mut last = 0;
        for _ in 0..2 {
            if let Some(v) = r.take(0) {
                if let Some(e) = check(v.seq, v.sample, v.values, &mut last) {
                    panic!("{e}");
                }
            }
        }
        drop(worker.join().unwrap());
        let v = r.take(0).expect("a value after the worker finished");
        if let Some(e) = check(v.seq, v.sample, v.values, &mut last) {
            panic!("{e}");
        }
        assert_eq!(v.seq, SUBMITS, "the newest value is the one left");
    });
}
