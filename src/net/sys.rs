//! The operating-system calls the network thread needs that std and mio do not offer: a
//! `timerfd` for sub-millisecond wake-ups, timer slack, the socket send-buffer size, and the
//! supervisor checks of the orphan policy. The one module of `net` that uses `unsafe`.
//!
//! ## Sub-millisecond wake-ups
//!
//! `mio::Poll::poll` on Linux is `epoll_wait`, whose timeout is whole milliseconds (mio rounds a
//! `Duration` *up* to the next millisecond, `src/sys/unix/selector/epoll.rs`). Acks should leave
//! within tens of microseconds of the audio callback that produced them, so deadlines are kept in
//! a `timerfd` (nanosecond resolution) registered with mio, and the poll itself waits without a
//! timeout. Elsewhere the deadline falls back to the poll timeout (millisecond granularity).
//!
//! [`set_timer_slack_1ns`] sets `PR_SET_TIMERSLACK` to 1 ns for the calling thread: by default
//! Linux may delay a timer of a normal-priority thread by up to 50 µs to batch wake-ups, which is
//! the whole margin we leave after the audio callback.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

/// A one-shot monotonic timer that mio can wait on.
#[derive(Debug)]
pub(crate) struct Timer {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    armed: Option<u64>,
}

#[cfg(target_os = "linux")]
impl Timer {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; a negative result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own and nothing else closes.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Self { fd, armed: None })
    }

    /// The raw descriptor, to register with mio through `SourceFd`.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// Arms the timer to fire `at_ns` (crate clock); `None` disarms. A no-op when unchanged.
    /// `now_ns` is the current crate clock time (the timer is set relative to it).
    ///
    /// A later deadline (or none) while an earlier one is still pending keeps the earlier one:
    /// the thread then wakes a little early, finds nothing due and re-arms. Deadlines that only
    /// move later, like the heartbeat deadline with every received frame, thus cost one
    /// `timerfd_settime` per wake-up instead of one per frame.
    pub(crate) fn set(&mut self, at_ns: Option<u64>, now_ns: u64) -> io::Result<()> {
        if at_ns == self.armed {
            return Ok(());
        }
        if let Some(armed) = self.armed {
            if armed > now_ns && at_ns.is_none_or(|at| at > armed) {
                return Ok(());
            }
        }
        self.armed = at_ns;
        // A zero it_value disarms, so a deadline already due is set 1 ns ahead.
        let rel = at_ns.map_or(0, |at| at.saturating_sub(now_ns).max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (rel / 1_000_000_000) as libc::time_t,
                tv_nsec: (rel % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec on our stack; the old-value pointer may be null.
        let r = unsafe { libc::timerfd_settime(self.raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Clears a fired timer's readiness (reads the expiration count). Forgets the deadline.
    pub(crate) fn acknowledge(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is 8 writable bytes, as timerfd's read requires; EAGAIN is fine.
        let _ = unsafe { libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.armed = None;
    }

    /// What to pass to `Poll::poll` as timeout: none, the timerfd does the waking.
    pub(crate) fn poll_timeout(&self, _now_ns: u64) -> Option<Duration> {
        None
    }
}

#[cfg(not(target_os = "linux"))]
impl Timer {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self { armed: None })
    }

    pub(crate) fn set(&mut self, at_ns: Option<u64>, _now_ns: u64) -> io::Result<()> {
        self.armed = at_ns;
        Ok(())
    }

    pub(crate) fn acknowledge(&mut self) {
        self.armed = None;
    }

    pub(crate) fn poll_timeout(&self, now_ns: u64) -> Option<Duration> {
        self.armed
            .map(|at| Duration::from_nanos(at.saturating_sub(now_ns)))
    }
}

/// Sets the calling thread's timer slack to 1 ns (Linux; a no-op elsewhere). Returns whether it
/// took effect.
pub(crate) fn set_timer_slack_1ns() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument, no pointer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Whether process `pid` still exists (`kill(pid, 0)` does not fail with `ESRCH`).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The parent process id.
pub(crate) fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// Sets `SO_SNDBUF` on a socket (the kernel may round or double it). Returns whether it worked.
pub(crate) fn set_send_buffer(fd: std::os::fd::RawFd, bytes: usize) -> bool {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `v` is a c_int on our stack and its size is passed; `fd` is a socket we own.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const v).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The timerfd wakes a mio poll that has no timeout, no earlier than asked.
    #[test]
    fn timerfd_wakes_mio_poll() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut t = Timer::new().unwrap();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&t.raw_fd()),
                mio::Token(1),
                mio::Interest::READABLE,
            )
            .unwrap();
        let now = crate::clock::now_ns();
        t.set(Some(now + 300_000), now).unwrap();
        let t0 = std::time::Instant::now();
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let elapsed = t0.elapsed();
        assert!(events.iter().any(|e| e.token() == mio::Token(1)));
        assert!(elapsed >= Duration::from_micros(250), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "timer did not fire");
        t.acknowledge();
        // Disarmed: nothing fires.
        t.set(None, crate::clock::now_ns()).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn timer_slack_and_process_checks() {
        assert!(set_timer_slack_1ns());
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap(); // reaped: the pid is gone (ESRCH)
        assert!(!process_alive(pid));
    }
}
