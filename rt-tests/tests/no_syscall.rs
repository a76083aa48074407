//! The callback path runs 100 000+ callbacks under a seccomp filter that traps every system
//! call except clock reads, with zero traps inside the endpoint's window (begin..end, no sleep
//! allowed there); negative controls show the filter catching `sched_yield`, a sleep, and the
//! opt-in `mio::Waker` write.

use crossbeam_utils::atomic::AtomicCell;
#[cfg(target_os = "linux")] // seccomp is the Linux proof
use loophole_ipc::rt::RtCommand;
#[cfg(target_os = "linux")] // seccomp is the Linux proof
use rt_tests::sim::expected_outcome;
#[cfg(target_os = "linux")] // seccomp is the Linux proof
use rt_tests::{seccomp, simulate, SimOptions};
#[cfg(all(target_os = "linux", feature = "rt-wake"))]
use std::sync::Arc;

#[cfg(target_os = "linux")] // seccomp is the Linux proof
fn seccomp_options() -> SimOptions {
    SimOptions {
        seccomp: true,
        ..SimOptions::default()
    }
}

#[cfg(target_os = "linux")] // seccomp is the Linux proof
/// Returns `false` (test passes vacuously, loudly) only with LOOPHOLE_ALLOW_NO_SECCOMP=1.
fn seccomp_or_fail(r: &rt_tests::SimReport) -> bool {
    if let Err(e) = &r.exactly_once {
        if e.starts_with("seccomp unavailable") {
            eprintln!("!!!!!!!! {e}: the no-syscall guarantee is NOT checked !!!!!!!!");
            assert!(
                seccomp::may_skip(),
                "{e} (set LOOPHOLE_ALLOW_NO_SECCOMP=1 to skip explicitly)"
            );
            return false;
        }
    }
    true
}

#[cfg(target_os = "linux")] // seccomp is the Linux proof
#[test]
fn callback_path_makes_no_system_call() {
    let r = simulate(seccomp_options(), |cmd: &RtCommand| expected_outcome(cmd));
    if !seccomp_or_fail(&r) {
        return;
    }
    println!("{r:#?}");
    // Informational: the thread's exit after the measured section (dropping the last half of
    // the bridge, thread teardown) may make calls; they are trapped (-EPERM) but not measured.
    println!(
        "traps including thread exit: {} {:?}",
        seccomp::traps(),
        seccomp::trapped_numbers()
    );
    assert!(r.callbacks >= 100_000);
    assert_eq!(
        r.traps,
        Some(0),
        "forbidden system call(s) on the audio thread: {:?}",
        r.trapped
    );
    r.exactly_once
        .as_ref()
        .expect("exactly one answer per command");
    assert!(r.send_full > 0 && r.reply_stalls > 0 && r.telemetry_dropped > 0);
}

#[cfg(target_os = "linux")] // seccomp is the Linux proof
/// Negative control: `std::thread::yield_now()` in the callback is a `sched_yield` — trapped.
#[test]
fn filter_traps_a_yield_in_the_callback() {
    let mut opts = seccomp_options();
    opts.callbacks = 2_000;
    let r = simulate(opts, |cmd: &RtCommand| {
        std::thread::yield_now();
        expected_outcome(cmd)
    });
    if !seccomp_or_fail(&r) {
        return;
    }
    let traps = r.traps.expect("seccomp ran");
    assert!(traps >= r.sent.min(1), "yield not trapped");
    assert!(traps > 0);
    assert_eq!(r.trapped.0, libc::SYS_sched_yield, "first trapped call");
}

/// Negative control: a sleep inside the endpoint's window (here in the engine's command handler)
/// is trapped (on main the filter allowed `nanosleep`/`clock_nanosleep`, so this passed unseen).
#[cfg(target_os = "linux")] // seccomp is the Linux proof
#[test]
fn filter_traps_a_sleep_in_the_callback() {
    let mut opts = seccomp_options();
    opts.callbacks = 2_000;
    let r = simulate(opts, |cmd: &RtCommand| {
        std::thread::sleep(std::time::Duration::from_nanos(1));
        expected_outcome(cmd)
    });
    if !seccomp_or_fail(&r) {
        return;
    }
    let traps = r.traps.expect("seccomp ran");
    assert!(traps > 0, "sleep not trapped");
    assert!(
        [libc::SYS_nanosleep, libc::SYS_clock_nanosleep].contains(&r.trapped.0),
        "first trapped call {}",
        r.trapped.0
    );
}

#[cfg(target_os = "linux")] // seccomp is the Linux proof
/// Negative control and documentation check for the `rt-wake` mode: with a waker configured,
/// the audio thread makes exactly one system call (the eventfd write) per callback that answered
/// a command — and none in the other callbacks.
#[cfg(feature = "rt-wake")]
#[test]
fn wake_mode_makes_one_write_per_callback_with_replies() {
    let poll = mio::Poll::new().expect("poll");
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
    let mut opts = seccomp_options();
    opts.callbacks = 4_000;
    opts.cfg.waker = Some(waker);
    let r = simulate(opts, |cmd: &RtCommand| expected_outcome(cmd));
    if !seccomp_or_fail(&r) {
        return;
    }
    let traps = r.traps.expect("seccomp ran");
    // Exactly one system call per callback that answered a command; none in the others
    // (transport telemetry alone does not wake).
    assert!(traps > 0, "the waker's write was not seen");
    assert_eq!(
        traps, r.callbacks_with_answers,
        "one wake per callback with answers"
    );
    assert!(
        r.callbacks_with_answers < r.callbacks,
        "some callbacks had nothing to answer"
    );
    assert_eq!(r.trapped.0, libc::SYS_write, "the wake is a write(2)");
    assert_eq!(r.trapped.1, libc::SYS_write);
}

/// The AtomicCell hazard: the crate uses no `AtomicCell` (health and meters are plain
/// `AtomicU32`/`AtomicU64`). This shows why: an `AtomicCell` of a type the hardware cannot swap
/// atomically is not lock-free (it falls back to a global seqlock/spin lock).
#[test]
fn no_atomic_cell_and_why() {
    let src = concat!(
        include_str!("../../src/rt/endpoint.rs"),
        include_str!("../../src/rt/health.rs"),
        include_str!("../../src/rt/meters.rs"),
        include_str!("../../src/rt/types.rs"),
        include_str!("../../src/rt/mod.rs"),
    );
    assert!(
        !src.contains("AtomicCell"),
        "AtomicCell used in src/rt: assert it is lock-free"
    );
    // What AtomicCell would do with our types: only a native-sized one is lock-free.
    assert!(AtomicCell::<u64>::is_lock_free());
    assert!(!AtomicCell::<loophole_ipc::rt::TransportState>::is_lock_free());
    assert!(!AtomicCell::<loophole_ipc::rt::RtReply>::is_lock_free());
}
