//! The audio path with taps active: over 100 000+ flood callbacks publishing 8 taps each, the
//! audio thread makes zero heap operations, and a concurrent, deliberately slow reader gets
//! only the samples rendered at their index (overruns counted, nothing returned torn). Each
//! claim has a negative control run through the same harness. The seccomp half is in
//! `taps_no_syscall.rs` (its own binary: the seccomp window counter is process-wide).

use rt_tests::tap_sim::{assert_taps_exercised, engine, options, TapFault, TAPS};
use rt_tests::{simulate, CountingAllocator};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[test]
fn taps_allocate_nothing_and_never_tear() {
    let r = simulate(options(TAPS, TapFault::None, false), engine);
    println!("{:#?}", r.taps);
    assert!(r.counter_live, "the counting allocator is not counting");
    assert!(r.callbacks >= 100_000);
    assert_eq!(r.audio_allocs, 0, "the audio thread allocated with taps on");
    assert_eq!(
        r.taps.mismatch, None,
        "a returned sample was not the rendered one"
    );
    assert_taps_exercised(&r);
    r.exactly_once
        .as_ref()
        .expect("exactly one answer per command");
    assert!(r.send_full > 0 && r.reply_stalls > 0 && r.telemetry_dropped > 0);
}

/// Negative control for the allocation proof: a tap that copies each block into a `Vec` (what
/// a channel of `Vec<f32>` does) is counted, twice per tap per callback.
#[test]
fn harness_counts_a_tap_that_copies_to_the_heap() {
    let mut opts = options(TAPS, TapFault::CopyToVec, false);
    opts.callbacks = 5_000;
    let r = simulate(opts, engine);
    assert!(r.counter_live);
    assert!(
        r.audio_allocs >= 2 * TAPS as u64 * r.callbacks,
        "heap copies missed: {} for {} callbacks",
        r.audio_allocs,
        r.callbacks
    );
}

/// Negative control for the sample check: a wrong sample published every 50 callbacks is seen.
#[test]
fn checker_sees_a_corrupted_sample() {
    let mut opts = options(TAPS, TapFault::Corrupt { every: 50 }, false);
    opts.callbacks = 20_000;
    let r = simulate(opts, engine);
    assert!(
        r.taps.mismatches > 0,
        "corruption not detected: {:?}",
        r.taps
    );
    let m = r.taps.mismatch.expect("first mismatch");
    assert!(m.contains("read 1000000"), "{m}");
}

/// The tap source uses no lock, no `AtomicCell` (may lock) and no `unsafe`; its wait-freedom
/// rests on plain atomics (see the loom model in `loom_taps.rs`).
#[test]
fn tap_source_has_no_lock_and_no_unsafe() {
    let code: Vec<&str> = include_str!("../../src/rt/tap.rs")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    assert!(code.len() > 100, "read the source");
    for word in [
        "Mutex",
        "RwLock",
        "AtomicCell",
        "unsafe",
        "compare_exchange",
        "Condvar",
    ] {
        assert!(
            !code.iter().any(|l| l.contains(word)),
            "src/rt/tap.rs contains `{word}`"
        );
    }
    // The check can fail: the comments (filtered out above) do mention `unsafe`.
    assert!(include_str!("../../src/rt/tap.rs").contains("unsafe"));
}

/// The consumer half is handed out once, and not at all without taps.
#[test]
fn take_taps_hands_out_one_reader() {
    use loophole_ipc::rt::{bridge, RtConfig};
    let (_audio, mut net) = bridge(&RtConfig::default());
    assert!(net.take_taps().is_none(), "no taps configured");
    let (mut audio, mut net) = bridge(&RtConfig::default().with_taps(3, 100));
    let reader = net.take_taps().expect("taps configured");
    assert!(net.take_taps().is_none(), "handed out twice");
    assert_eq!((reader.taps(), reader.capacity()), (3, 128));
    assert!(audio.publish_tap(2, &[1.0]).is_ok());
    assert_eq!(
        audio.publish_tap(3, &[1.0]),
        Err(loophole_ipc::rt::TapError::NoSuchTap)
    );
}
