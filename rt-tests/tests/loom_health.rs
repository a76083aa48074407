//! Model check of the in-callback flag (`src/rt/health.rs`) with loom: a network thread that
//! sees the callback ended (`audio_in_callback() == false`) must then find every reply that
//! callback pushed. `spin_for_replies` stops on that flag, so a reply hidden behind it would wait
//! for the next wake-up.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p rt-tests --test loom_health --release`
//! (without `--cfg loom` this file compiles to nothing). The negative control is the weakened
//! build (`--cfg loophole_weak_ordering`, all hand-over orderings `Relaxed`), which this test
//! must fail: `scripts/test.d/rt.sh` runs it and requires the failure. Regression: on the old
//! code (the flag `Relaxed` on both sides) this test fails the same way.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loophole_ipc::rt::LoomHealth;

static EXPLORED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn a_finished_callbacks_replies_are_visible() {
    loom::model(|| {
        EXPLORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let health = Arc::new(LoomHealth::default());
        // The reply queue's write index: `rtrb` publishes a push with a Release store and the
        // consumer reads it with an Acquire load.
        let tail = Arc::new(AtomicU64::new(0));
        health.begin();
        let audio = {
            let (health, tail) = (Arc::clone(&health), Arc::clone(&tail));
            loom::thread::spawn(move || {
                tail.store(1, Ordering::Release); // the callback's answer
                health.end();
            })
        };
        // The network thread's spin: stop once the callback is over, then take the replies.
        if !health.in_callback() {
            assert_eq!(
                tail.load(Ordering::Acquire),
                1,
                "in-callback flag seen false before the callback's reply"
            );
        }
        audio.join().unwrap();
    });
    let explored = EXPLORED.load(std::sync::atomic::Ordering::Relaxed);
    println!("loom explored {explored} interleavings");
    assert!(explored > 2, "loom explored too few interleavings");
}
