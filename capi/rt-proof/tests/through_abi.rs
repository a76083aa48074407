//! The real-time proofs through the C ABI (see the crate docs): the C++ engine callback makes
//! no heap operation and no system call over 100 000 callbacks under a command flood, every
//! command is answered exactly once; negative controls allocate or make a system call in the
//! same callback and must be seen.

use loophole_ipc_capi_rt::{run, Mode, Report};

const CALLBACKS: u64 = 100_000;

fn flood_happened(r: &Report) {
    assert!(
        r.answered_during_measure > 10_000,
        "too little traffic: {r:#?}"
    );
    assert_eq!(
        r.bad_answers, 0,
        "an answer for a command never sent, or twice: {r:#?}"
    );
    assert_eq!(
        r.answered, r.sent,
        "every command answered exactly once: {r:#?}"
    );
}

/// Seccomp must be available unless LOOPHOLE_ALLOW_NO_SECCOMP=1 says it may be skipped.
fn seccomp_ran(r: &Report) -> bool {
    if let Some(e) = &r.seccomp_unavailable {
        eprintln!(
            "!!!!!!!! seccomp unavailable ({e}): the no-syscall proof is NOT checked !!!!!!!!"
        );
        assert!(rt_tests::seccomp::may_skip(), "seccomp unavailable: {e}");
        return false;
    }
    true
}

#[test]
fn cpp_callback_makes_no_heap_operation_under_a_flood() {
    let r = run(CALLBACKS, Mode::Engine, false);
    println!("{r:#?}");
    assert!(
        r.counter_live,
        "the interposer does not count: the proof would prove nothing"
    );
    assert_eq!(r.callbacks, CALLBACKS);
    assert_eq!(r.heap_ops, 0, "the audio thread used the heap: {r:#?}");
    assert_eq!(r.news, 0, "operator new on the audio thread: {r:#?}");
    flood_happened(&r);
}

#[test]
fn negative_control_an_allocating_callback_is_counted() {
    let r = run(5_000, Mode::Allocates, false);
    assert!(r.counter_live);
    assert_eq!(r.news, 5_000, "{r:#?}");
    assert!(
        r.heap_ops >= 10_000,
        "new + delete each pass malloc/free: {r:#?}"
    );
}

#[test]
fn cpp_callback_makes_no_system_call_under_a_flood() {
    let r = run(CALLBACKS, Mode::Engine, true);
    println!("{r:#?}");
    if !seccomp_ran(&r) {
        return;
    }
    assert_eq!(
        r.traps,
        Some(0),
        "system call(s) on the audio thread: {r:#?}"
    );
    assert_eq!(r.heap_ops, 0);
    flood_happened(&r);
}

#[test]
fn negative_control_a_system_call_in_the_callback_is_trapped() {
    let r = run(5_000, Mode::Syscall, true);
    if !seccomp_ran(&r) {
        return;
    }
    assert_eq!(r.traps, Some(5_000), "{r:#?}");
    assert_eq!(r.first_trap, libc_getppid());
}

fn libc_getppid() -> i64 {
    110 // SYS_getppid on x86_64 (the filter itself only exists on linux x86_64)
}
