//! The audio thread's callback path makes zero heap operations over 100 000+ callbacks while
//! the network side floods, stops reading, reads slowly, pauses, resumes and disconnects —
//! and the same harness reports allocations when the callback does allocate.

use loophole_ipc::rt::RtCommand;
use rt_tests::sim::expected_outcome;
use rt_tests::{simulate, CountingAllocator, SimOptions};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[test]
fn audio_thread_never_allocates_under_hostile_network() {
    let r = simulate(SimOptions::default(), |cmd: &RtCommand| {
        expected_outcome(cmd)
    });
    println!("{r:#?}");
    assert!(
        r.counter_live,
        "the counting allocator is not counting: the check would prove nothing"
    );
    assert!(r.callbacks >= 100_000);
    assert_eq!(r.audio_allocs, 0, "the audio thread allocated");
    // The hostile phases really happened.
    assert!(r.send_full > 0, "the command queue was never full");
    assert!(r.reply_stalls > 0, "the reply queue never backed up");
    assert!(r.telemetry_dropped > 0, "no telemetry was ever dropped");
    assert!(
        r.net_dropped_at > 0 && r.net_dropped_at < r.callbacks,
        "network side never dropped mid-run"
    );
    assert!(r.meter_takes > 0);
    // Nothing lost: every accepted command got exactly one answer, in order.
    r.exactly_once
        .as_ref()
        .expect("exactly one answer per command");
    assert!(r.sent > 1000, "too little traffic: {}", r.sent);
    assert!(r.max_per_callback <= 16);
}

/// Negative control: the callback allocates; the same harness must see it.
#[test]
fn harness_detects_an_allocating_callback() {
    let r = simulate(SimOptions::default(), |cmd: &RtCommand| {
        std::hint::black_box(Box::new(cmd.id));
        expected_outcome(cmd)
    });
    assert!(r.counter_live);
    assert!(
        r.audio_allocs >= r.sent,
        "allocations missed: {} < {}",
        r.audio_allocs,
        r.sent
    );
    assert!(r.audio_allocs > 0);
}
