//! `GuardAction::Abort` really aborts the process when the audio callback allocates (checked
//! in a child process: this test binary re-runs itself).
#![cfg(feature = "rt-guard")]

use loophole_ipc::rt::guard::{GuardAction, GuardedAllocator};
use loophole_ipc::rt::{bridge, RtConfig};
use std::alloc::System;
use std::process::Command;

#[global_allocator]
static ALLOC: GuardedAllocator<System> = GuardedAllocator::new(System, GuardAction::Abort);

const CHILD: &str = "LOOPHOLE_GUARD_CHILD";

/// In the child: allocate inside a callback (must abort). In the parent: does nothing.
#[test]
fn child_allocates_in_callback() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (mut audio, _net) = bridge(&RtConfig::default());
    audio.begin_callback(0, 64);
    std::hint::black_box(Box::new(42u64));
    audio.end_callback(1);
    // Only reached if the guard failed.
    std::process::exit(0);
}

#[test]
fn allocation_in_callback_aborts() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_allocates_in_callback",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("spawn child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        aborted(&out.status),
        "child did not abort: {:?} {stderr}",
        out.status
    );
    assert!(
        stderr.contains("heap allocation or free inside the audio callback"),
        "{stderr}"
    );
}

/// Control: a callback that does not allocate runs to completion under the aborting guard.
#[test]
fn clean_callback_does_not_abort() {
    let (mut audio, _net) = bridge(&RtConfig::default());
    for n in 0..100 {
        audio.begin_callback(n, 64);
        audio.publish_meter(0, &[0.1; 64]);
        audio.end_callback(n + 1);
    }
}

/// Whether the child ended by `std::process::abort`: SIGABRT on Unix; on Windows std aborts
/// with `__fastfail`, exit status `STATUS_STACK_BUFFER_OVERRUN`.
#[cfg(unix)]
fn aborted(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGABRT)
}

#[cfg(windows)]
fn aborted(status: &std::process::ExitStatus) -> bool {
    status.code() == Some(0xC000_0409_u32 as i32)
}
