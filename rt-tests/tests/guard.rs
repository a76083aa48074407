//! The `rt-guard` feature: `GuardedAllocator` sees heap use inside the audio callback (between
//! `begin_callback` and `end_callback`) and nowhere else.
#![cfg(feature = "rt-guard")]

use loophole_ipc::rt::guard::{self, GuardAction, GuardedAllocator};
use loophole_ipc::rt::{bridge, Outcome, RtCommand, RtConfig, RtOp};
use std::alloc::System;

#[global_allocator]
static ALLOC: GuardedAllocator<System> = GuardedAllocator::new(System, GuardAction::Count);

// The violation counter is process-wide: keep these in one test so none runs concurrently.
#[test]
fn guard_counts_only_allocations_inside_the_callback() {
    let (mut audio, mut net) = bridge(&RtConfig::default());
    let base = guard::violations();

    // Clean callbacks: no violation, and the flag is off outside.
    for n in 0..1000u32 {
        net.try_send(RtCommand {
            id: n,
            op: RtOp::Play,
        })
        .unwrap();
        audio.begin_callback(u64::from(n) * 1000, 64);
        assert!(guard::in_audio_callback());
        audio.drain(|_| Outcome::Applied);
        audio.publish_meter(0, &[0.5; 64]);
        audio.end_callback(u64::from(n) * 1000 + 500);
        assert!(!guard::in_audio_callback());
        let _ = net.pop_reply();
        let _outside = std::hint::black_box(vec![0u8; 32]); // allowed: not in a callback
    }
    assert_eq!(
        guard::violations(),
        base,
        "clean callbacks must not trip the guard"
    );

    // Negative control: a callback that allocates is caught, with its size.
    net.try_send(RtCommand {
        id: 9,
        op: RtOp::Stop,
    })
    .unwrap();
    audio.begin_callback(0, 64);
    audio.drain(|_| {
        std::hint::black_box(vec![0u8; 777]);
        Outcome::Applied
    });
    audio.end_callback(1);
    assert_eq!(guard::violations(), base + 2, "one alloc and one free");
    assert_eq!(guard::last_violation_size(), 777);

    // Other threads are not affected by this thread's flag.
    audio.begin_callback(2, 64);
    std::thread::scope(|s| {
        s.spawn(|| assert!(!guard::in_audio_callback()));
    });
    audio.end_callback(3);
    assert!(guard::violations() >= base + 2);
}
