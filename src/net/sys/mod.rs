//! The platform layer of the network thread: what std and mio do not offer, one room per OS
//! behind one small interface (the shape of mio's `src/sys/`). The only modules of `net` that
//! use `unsafe`.
//!
//! | item | Linux (`linux.rs`) | macOS (`macos.rs`) | Windows (`windows.rs`) |
//! |---|---|---|---|
//! | [`Timer`]: sub-millisecond wake-ups of `mio::Poll` | `timerfd`, registered with mio | `EVFILT_TIMER` (`NOTE_NSECONDS`) in a private kqueue, registered with mio | a high-resolution waitable timer waited on by a helper thread that wakes the poll with a loopback UDP datagram |
//! | [`set_timer_slack_1ns`] | `PR_SET_TIMERSLACK` | no-op | no-op |
//! | [`request_short_slice`] | `sched_getattr` + `sched_setattr`: a 100 µs EEVDF slice for a `SCHED_OTHER` thread, nice and policy kept | no-op | no-op |
//! | [`process_alive`] | `kill(pid, 0)` (`unix.rs`) | same | `OpenProcess` + `WaitForSingleObject(0)` |
//! | [`parent_pid`] | `getppid` (`unix.rs`) | same | the parent recorded at start while it runs, 0 once it has exited |
//! | [`configure_listener`] | `TCP_NODELAY` on the listener (accepted sockets inherit it) | nothing | nothing |
//! | [`configure_accepted`] | `SO_SNDBUF` (socket2); `TCP_NODELAY` only if the listener's did not take | `TCP_NODELAY`, `SO_SNDBUF`, `SO_NOSIGPIPE` | `TCP_NODELAY`, `SO_SNDBUF` |
//!
//! The interface, as every room implements it:
//! - `Timer::new() -> io::Result<Timer>`, `Timer::register(&mut self, &Registry, Token)`,
//!   `Timer::set(&mut self, Option<u64>, now) -> io::Result<()>`, `Timer::acknowledge`,
//!   `Timer::poll_timeout(&self, now) -> Option<Duration>`. Network thread only. `new` and
//!   `register` allocate (the Windows helper thread and its sockets); `set` is one system call
//!   at most (Linux: none for a deadline 2 ms or more ahead, left to the poll's timeout);
//!   `acknowledge` at most one read (Linux: none, the timer is edge-triggered; Windows: until
//!   `WouldBlock`).
//! - free functions below: any thread; each is one or two system calls, no allocation (except
//!   Windows' [`parent_pid`], which takes one process snapshot the first time it is called).
//!
//! ## Sub-millisecond wake-ups
//!
//! Acks should leave within tens of microseconds of the audio callback that produced them.
//! `mio::Poll::poll` on Linux is `epoll_wait`, whose timeout is whole milliseconds (mio rounds a
//! `Duration` *up*), and on Windows `GetQueuedCompletionStatusEx`, also whole milliseconds and
//! on the system tick unless raised. Those two rooms therefore keep the deadline in a kernel
//! timer that wakes the poll; macOS does the same with a kqueue timer, so that in every room an
//! expiry is an event with the timer's token.

use std::time::Duration;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{request_short_slice, set_timer_slack_1ns, Timer};

#[cfg(target_vendor = "apple")]
mod macos;
#[cfg(target_vendor = "apple")]
pub(crate) use macos::{request_short_slice, set_timer_slack_1ns, Timer};

#[cfg(not(any(target_os = "linux", target_vendor = "apple", windows)))]
compile_error!(
    "loophole-ipc's platform layer (src/net/sys) has rooms for Linux, macOS and Windows"
);

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{parent_pid, process_alive};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{
    parent_pid, process_alive, request_short_slice, set_timer_slack_1ns, Timer,
};

/// Options of the listening socket, set once at spawn. Linux: `TCP_NODELAY`, which every
/// socket it accepts inherits (the child socket is a copy of the listener's; `tests` check it
/// on an accepted socket, with a listener without the option as the negative control), so
/// accepting costs no `setsockopt`. Returns whether accepted sockets get `TCP_NODELAY` this
/// way; elsewhere `false`, and [`configure_accepted`] sets it per socket. No allocation.
pub(crate) fn configure_listener(listener: &mio::net::TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        false
    }
}

/// Options of every accepted socket: `TCP_NODELAY` unless inherited from the listener
/// ([`configure_listener`] returned `true`), the send buffer when configured (the kernel may
/// round or double it), and on macOS `SO_NOSIGPIPE`, so that writing to a vanished peer is an
/// `EPIPE` error and never a SIGPIPE (Linux: std and mio send with `MSG_NOSIGNAL`; Windows has
/// no SIGPIPE). Returns whether every option took. Network thread; no allocation; one system
/// call per option set (none on Linux with the defaults).
pub(crate) fn configure_accepted(
    stream: &mio::net::TcpStream,
    nodelay_inherited: bool,
    send_buffer: Option<usize>,
) -> bool {
    let sock = socket2::SockRef::from(stream);
    let mut ok = true;
    if !nodelay_inherited {
        ok &= stream.set_nodelay(true).is_ok();
    }
    if let Some(bytes) = send_buffer {
        ok &= sock.set_send_buffer_size(bytes).is_ok();
    }
    #[cfg(target_vendor = "apple")]
    {
        ok &= sock.set_nosigpipe(true).is_ok();
    }
    ok
}

/// Whether a timer armed for `armed` should be kept when asked for `at` at `now`: a later
/// deadline (or none) while an earlier one is still pending keeps the earlier one. The thread
/// then wakes a little early, finds nothing due and re-arms; deadlines that only move later,
/// like the heartbeat deadline with every received frame, cost one timer call per wake-up
/// instead of one per frame.
fn keep_earlier(armed: Option<u64>, at: Option<u64>, now: u64) -> bool {
    armed.is_some_and(|armed| armed > now && at.is_none_or(|at| at > armed))
}

/// The poll timeout that reaches `at` no earlier than asked (`None`: no deadline).
#[cfg_attr(not(windows), allow(dead_code))]
fn timeout_until(at: Option<u64>, now: u64) -> Option<Duration> {
    at.map(|at| Duration::from_nanos(at.saturating_sub(now)))
}

/// Measures this platform's [`Timer`] as the network thread uses it: for each sample, arms it
/// `ahead_ns` ahead, waits in `mio::Poll` for its event and records how late the poll returned
/// (ns after the deadline) into `lateness_ns`. For `benches/wake.rs` only (hidden re-export
/// `loophole_ipc::__timer_wake_lateness`); sets the calling thread's timer slack like the network
/// thread does. Allocates (poll, timer) once; blocks for about `samples × ahead`.
/// Whether this OS and kernel give a thread the short scheduler slice it asks for (Linux ≥
/// 6.12 unless a filter refuses `sched_setattr`; never elsewhere). For `tests/net_sched.rs`
/// only (hidden re-export `loophole_ipc::__short_slice_takes_effect`). Spawns a thread.
#[doc(hidden)]
pub fn short_slice_takes_effect() -> bool {
    #[cfg(target_os = "linux")]
    return linux::short_slice_takes_effect();
    #[cfg(not(target_os = "linux"))]
    false
}

#[doc(hidden)]
pub fn timer_wake_lateness(ahead_ns: u64, lateness_ns: &mut [u64]) -> std::io::Result<()> {
    const TOKEN: mio::Token = mio::Token(1);
    let _ = set_timer_slack_1ns();
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(4);
    let mut t = Timer::new()?;
    t.register(poll.registry(), TOKEN)?;
    for slot in lateness_ns.iter_mut() {
        let now = crate::clock::now_ns();
        let at = now + ahead_ns;
        t.set(Some(at), now)?;
        loop {
            poll.poll(&mut events, t.poll_timeout(crate::clock::now_ns()))?;
            if events.iter().any(|e| e.token() == TOKEN) {
                break;
            }
            // No timer event: a room whose poll timeout is the wake-up reached the deadline, or
            // a far deadline waited in the poll and the rest goes to the timer (as the loop does).
            let now = crate::clock::now_ns();
            if now >= at {
                break;
            }
            t.set(Some(at), now)?;
        }
        *slot = crate::clock::now_ns().saturating_sub(at);
        t.acknowledge();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMER: mio::Token = mio::Token(1);

    fn wait_for_timer(poll: &mut mio::Poll, t: &Timer, limit: Duration) -> (bool, Duration) {
        let mut events = mio::Events::with_capacity(4);
        let t0 = std::time::Instant::now();
        loop {
            let now = crate::clock::now_ns();
            let left = limit.saturating_sub(t0.elapsed());
            let timeout = t.poll_timeout(now).map_or(left, |d| d.min(left));
            poll.poll(&mut events, Some(timeout)).unwrap();
            let fired = events.iter().any(|e| e.token() == TIMER);
            // Without a kernel timer (kqueue) the poll timeout is the wake-up itself.
            let due = t.poll_timeout(crate::clock::now_ns()) == Some(Duration::ZERO);
            if fired || due || t0.elapsed() >= limit {
                return (fired || due, t0.elapsed());
            }
        }
    }

    /// The timer wakes a mio poll no earlier than asked, and once disarmed, not at all.
    /// Negative control: the disarmed half waits the whole window and sees nothing.
    #[test]
    fn timer_wakes_mio_poll() {
        let mut poll = mio::Poll::new().unwrap();
        let mut t = Timer::new().unwrap();
        t.register(poll.registry(), TIMER).unwrap();
        let now = crate::clock::now_ns();
        t.set(Some(now + 300_000), now).unwrap();
        let (fired, elapsed) = wait_for_timer(&mut poll, &t, Duration::from_secs(5));
        assert!(fired, "timer did not fire");
        assert!(elapsed >= Duration::from_micros(250), "{elapsed:?}");
        t.acknowledge();
        // Disarmed: nothing fires.
        t.set(None, crate::clock::now_ns()).unwrap();
        let (fired, _) = wait_for_timer(&mut poll, &t, Duration::from_millis(30));
        assert!(!fired, "a disarmed timer fired");
    }

    /// Linux: `acknowledge` reads nothing, so the timer's expiry count stays unread. The next
    /// deadline still wakes the poll (fails if the edge-triggered registration missed a second
    /// expiry), and the unread count alone wakes nothing (fails if the registration were
    /// level-triggered: the loop would then spin with timeout 0).
    #[cfg(target_os = "linux")]
    #[test]
    fn an_unread_timer_fires_again_and_only_when_armed() {
        let mut poll = mio::Poll::new().unwrap();
        let mut t = Timer::new().unwrap();
        t.register(poll.registry(), TIMER).unwrap();
        for round in 0..3 {
            let now = crate::clock::now_ns();
            let at = now + 200_000;
            t.set(Some(at), now).unwrap();
            let (fired, _) = wait_for_timer(&mut poll, &t, Duration::from_secs(5));
            assert!(fired, "round {round}: an armed timer did not wake the poll");
            // Set as an absolute time: never before the deadline on the crate clock.
            let woke = crate::clock::now_ns();
            assert!(woke >= at, "round {round}: woke {} ns early", at - woke);
            t.acknowledge();
            let (again, _) = wait_for_timer(&mut poll, &t, Duration::from_millis(30));
            assert!(
                !again,
                "round {round}: the unread expiry woke the poll again"
            );
        }
    }

    /// Linux: a deadline `FAR_NS` (2 ms) or more ahead is left to the poll's timeout, which
    /// returns ahead of it with no timer event; the next `set` (as the loop makes on that
    /// wake-up) puts the rest in the timerfd, which fires at the deadline and not before.
    /// Controls: without that second `set` no timer event comes even well past the deadline
    /// (so the first `set` armed nothing: no system call); a near deadline gets no poll timeout.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_far_deadline_waits_in_the_poll_then_in_the_timer() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut t = Timer::new().unwrap();
        t.register(poll.registry(), TIMER).unwrap();
        for second_set in [true, false] {
            let now = crate::clock::now_ns();
            let at = now + 5_900_000;
            t.set(Some(at), now).unwrap();
            let timeout = t
                .poll_timeout(now)
                .expect("a far deadline gives a poll timeout");
            assert_eq!(
                timeout,
                Duration::from_millis(4),
                "whole ms left (5) less one"
            );
            // 1.9 ms of margin: a poll that returns after the deadline would miss the timerfd.
            poll.poll(&mut events, Some(timeout)).unwrap();
            assert!(
                !events.iter().any(|e| e.token() == TIMER),
                "the timerfd was armed for a far deadline"
            );
            let woke = crate::clock::now_ns();
            assert!(
                woke < at,
                "the poll returned {} ns after the deadline",
                woke - at
            );
            if second_set {
                t.set(Some(at), woke).unwrap();
                let (fired, _) = wait_for_timer(&mut poll, &t, Duration::from_secs(5));
                assert!(fired, "the rest of the wait did not fire");
                assert!(crate::clock::now_ns() >= at, "woke before the deadline");
                t.acknowledge();
            } else {
                let left =
                    Duration::from_nanos(at.saturating_sub(woke)) + Duration::from_millis(10);
                poll.poll(&mut events, Some(left)).unwrap();
                assert!(
                    !events.iter().any(|e| e.token() == TIMER),
                    "control: a timer event came without the second set"
                );
            }
        }
        let now = crate::clock::now_ns();
        t.set(Some(now + 500_000), now).unwrap();
        assert_eq!(
            t.poll_timeout(now),
            None,
            "a near deadline is the timerfd's"
        );
    }

    #[test]
    fn earlier_deadline_is_kept() {
        assert!(keep_earlier(Some(10), Some(20), 5));
        assert!(keep_earlier(Some(10), None, 5));
        assert!(
            !keep_earlier(Some(10), Some(8), 5),
            "an earlier deadline re-arms"
        );
        assert!(
            !keep_earlier(Some(10), Some(20), 10),
            "a passed deadline re-arms"
        );
        assert!(!keep_earlier(None, Some(20), 5));
    }

    /// This process is alive; a child that exited and was reaped is not (negative control).
    #[test]
    fn process_checks() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--list", "--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        drop(child); // Windows: the last handle closed, the process object is gone
        assert!(!process_alive(pid), "a reaped child counts as alive");
    }

    const PARENT_ENV: &str = "LOOPHOLE_SYS_TEST_PARENT";

    /// A child of this test binary sees this process as its parent (re-runs this test in a
    /// child with our pid in the environment). Negative control: the child compares against
    /// our pid + 1, and must fail.
    #[test]
    fn parent_pid_names_the_spawner() {
        if let Ok(expected) = std::env::var(PARENT_ENV) {
            assert_eq!(parent_pid().to_string(), expected);
            return;
        }
        let run = |expected: u32| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "net::sys::tests::parent_pid_names_the_spawner"])
                .arg("--test-threads=1")
                .env(PARENT_ENV, expected.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
        };
        assert!(
            run(std::process::id()).success(),
            "the child saw another parent"
        );
        assert!(
            !run(std::process::id() + 1).success(),
            "the check cannot fail"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn timer_slack() {
        assert!(set_timer_slack_1ns());
    }

    /// An accepted socket has `TCP_NODELAY`, set per socket or inherited from a listener
    /// that [`configure_listener`] configured; the send buffer takes, read back through socket2
    /// (the kernel may double it). Negative control: a listener left alone hands out sockets
    /// without `TCP_NODELAY`, so the inheritance check can fail.
    #[test]
    fn accepted_socket_options() {
        let accept_one = |configure: bool| {
            let l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let inherited = configure && configure_listener(&l);
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            (s, inherited)
        };
        let (plain, inherited) = accept_one(false);
        assert!(!inherited);
        assert!(
            !plain.nodelay().unwrap(),
            "the control: no TCP_NODELAY by default"
        );
        let (s, inherited) = accept_one(true);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        assert_eq!(
            s.nodelay().unwrap(),
            inherited,
            "inherited from the listener"
        );
        assert!(configure_accepted(&s, inherited, Some(64 * 1024)));
        assert!(s.nodelay().unwrap());
        let got = socket2::SockRef::from(&s).send_buffer_size().unwrap();
        assert!(got >= 32 * 1024, "{got}");
        #[cfg(target_vendor = "apple")]
        assert!(nosigpipe(&s), "SO_NOSIGPIPE not set");
    }

    /// Reads `SO_NOSIGPIPE` back (socket2 only sets it).
    #[cfg(target_vendor = "apple")]
    #[allow(unsafe_code)]
    fn nosigpipe(s: &mio::net::TcpStream) -> bool {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writing and `len` is `v`'s size.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&raw mut v).cast(),
                &mut len,
            )
        };
        r == 0 && v != 0
    }
}
