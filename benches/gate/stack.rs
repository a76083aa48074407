//! Entry of the `stack` bench (`benches/stack.rs`). It measures Linux mechanisms (CPU pinning and affinity, gettid, SCHED_FIFO, timer slack, clock_nanosleep, timerfd)
//! against each other, so it runs on Linux; on other systems it builds and says it has nothing
//! to run. The portable benches are `codec`, `rt_callback` and `wake`.

#[cfg(target_os = "linux")]
#[path = "../stack.rs"]
mod stack;

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    stack::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("stack: a Linux-only bench (CPU pinning and affinity, gettid, SCHED_FIFO, timer slack, clock_nanosleep, timerfd); nothing to run here");
}
