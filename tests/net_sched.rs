//! The network thread asks for a short scheduler slice (Linux ≥ 6.12, `SCHED_OTHER`): its
//! wake-up after an audio callback then preempts a busy task on its CPU sooner (the ack's fixed
//! cost under load, docs/benchmarks.md "Sixth session"). Read from `/proc/self/task/*/sched`
//! (`se.slice`, ns). On a kernel that does not honour a requested slice (before 6.12, or a
//! filter refusing `sched_setattr`) the test checks nothing, and says so.
#![cfg(target_os = "linux")]

mod net_support;

use net_support::*;

/// `se.slice` of `/proc/self/task/<tid>/sched`, for the task named `comm` (or this thread when
/// `comm` is `None`).
fn slice_ns(comm: Option<&str>) -> Option<u64> {
    let dir = match comm {
        None => std::path::PathBuf::from("/proc/thread-self"),
        Some(name) => std::fs::read_dir("/proc/self/task")
            .ok()?
            .filter_map(|t| t.ok().map(|t| t.path()))
            .find(|d| std::fs::read_to_string(d.join("comm")).is_ok_and(|c| c.trim() == name))?,
    };
    let sched = std::fs::read_to_string(dir.join("sched")).ok()?;
    let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

#[test]
fn the_network_thread_has_a_100_us_slice_and_the_host_threads_keep_theirs() {
    if !loophole_ipc::__short_slice_takes_effect() {
        eprintln!("this kernel does not honour a requested slice (< 6.12, or sched_setattr refused): nothing to check");
        return;
    }
    let host = slice_ns(None).expect("a kernel with custom slices prints se.slice");
    let e = Engine::start(fast());
    let _client = e.client(); // handshake done: the thread is in its loop
    let net = slice_ns(Some("loophole-net")).expect("the network thread is found");
    assert_eq!(net, 100_000, "the network thread's slice");
    // Control: the thread that spawned the server is not changed (its default slice).
    assert_ne!(host, 100_000);
    assert_eq!(slice_ns(None), Some(host));
    drop(e);
}
