//! Entry of the `floor` bench (`benches/floor.rs`). It measures Linux mechanisms (CPU pinning, timer slack, timerfd, abstract Unix sockets)
//! against each other, so it runs on Linux; on other systems it builds and says it has nothing
//! to run. The portable benches are `codec`, `rt_callback` and `wake`.

#[cfg(target_os = "linux")]
#[path = "../floor.rs"]
mod floor;

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    floor::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("floor: a Linux-only bench (CPU pinning, timer slack, timerfd, abstract Unix sockets); nothing to run here");
}
