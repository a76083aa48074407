//! Linux room: a `timerfd` for sub-millisecond wake-ups, and timer slack.
//!
//! `epoll_wait` takes whole milliseconds, so deadlines are kept in a `timerfd` (nanosecond
//! resolution) registered with mio, and the poll itself waits without a timeout.
//!
//! [`set_timer_slack_1ns`] sets `PR_SET_TIMERSLACK` to 1 ns for the calling thread: by default
//! Linux may delay a timer of a normal-priority thread by up to 50 µs to batch wake-ups, which is
//! the whole margin we leave after the audio callback.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;

/// A one-shot monotonic timer that mio can wait on.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
    armed: Option<u64>,
}

impl Timer {
    /// Creates the disarmed timer (one `timerfd_create`).
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
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, armed: None })
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Registers the timer with `registry`: its expiry is a readable event with `token`.
    pub(crate) fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.raw_fd()),
            token,
            mio::Interest::READABLE,
        )
    }

    /// Arms the timer to fire `at_ns` (crate clock); `None` disarms. A no-op when unchanged or
    /// when an earlier pending deadline is kept (see `keep_earlier`). `now_ns` is the current
    /// crate clock time (the timer is set relative to it). One `timerfd_settime` at most.
    pub(crate) fn set(&mut self, at_ns: Option<u64>, now_ns: u64) -> io::Result<()> {
        if at_ns == self.armed || super::keep_earlier(self.armed, at_ns, now_ns) {
            return Ok(());
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

/// Sets the calling thread's timer slack to 1 ns. Returns whether it took effect.
pub(crate) fn set_timer_slack_1ns() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument, no pointer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}
