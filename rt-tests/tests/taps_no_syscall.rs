//! The audio path with taps active makes no system call: 100 000+ flood callbacks publishing 8
//! taps each under the seccomp filter, zero traps; the negative control is a tap that wakes its
//! consumer (one eventfd write per callback, each trapped). Only seccomp runs in this binary.
#![cfg(target_os = "linux")] // seccomp is the Linux proof

use rt_tests::tap_sim::{assert_taps_exercised, engine, options, TapFault, TAPS};
use rt_tests::{seccomp, simulate, SimReport};
use std::sync::Arc;

/// Returns `false` (test passes vacuously, loudly) only with LOOPHOLE_ALLOW_NO_SECCOMP=1.
fn seccomp_ran(r: &SimReport) -> bool {
    if let Err(e) = &r.exactly_once {
        if e.starts_with("seccomp unavailable") {
            eprintln!("!!!!!!!! {e}: the no-syscall guarantee is NOT checked !!!!!!!!");
            assert!(
                seccomp::may_skip(),
                "{e} (LOOPHOLE_ALLOW_NO_SECCOMP=1 skips)"
            );
            return false;
        }
    }
    true
}

#[test]
fn taps_make_no_system_call() {
    let r = simulate(options(TAPS, TapFault::None, true), engine);
    if !seccomp_ran(&r) {
        return;
    }
    assert!(r.callbacks >= 100_000);
    assert_eq!(
        r.traps,
        Some(0),
        "system call(s) with taps on: {:?}",
        r.trapped
    );
    assert_eq!(r.taps.mismatch, None);
    assert_taps_exercised(&r);
    r.exactly_once
        .as_ref()
        .expect("exactly one answer per command");
}

/// Negative control for the seccomp proof: a tap that wakes its consumer after publishing
/// (an eventfd write) is trapped once per callback.
#[test]
fn filter_traps_a_tap_that_wakes_its_consumer() {
    let poll = mio::Poll::new().expect("poll");
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
    let mut opts = options(TAPS, TapFault::WakeConsumer(waker), true);
    opts.callbacks = 4_000;
    let r = simulate(opts, engine);
    if !seccomp_ran(&r) {
        return;
    }
    assert_eq!(r.traps, Some(r.callbacks), "one trapped write per callback");
    assert_eq!(r.trapped.0, libc::SYS_write);
}
