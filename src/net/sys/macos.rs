//! macOS room: a kqueue timer for sub-millisecond wake-ups.
//!
//! The deadline lives in a private kqueue holding one `EVFILT_TIMER` (`NOTE_NSECONDS`,
//! one-shot). A kqueue descriptor is itself readable while it has pending events, so mio's own
//! kqueue waits on it like on Linux's timerfd, and an expiry arrives as an event with the
//! timer's token. (mio's poll timeout would be nanosecond-precise too, but an event is what
//! tells the network thread that the deadline, not a socket, woke it.) macOS may coalesce
//! timers of threads that are not real-time: the precision is stated, not measured, until this
//! runs on a Mac (docs/platforms.md).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;

/// The `ident` of our one timer in the private kqueue.
const IDENT: libc::uintptr_t = 1;

/// A one-shot monotonic timer that mio can wait on.
#[derive(Debug)]
pub(crate) struct Timer {
    kq: OwnedFd,
    armed: Option<u64>,
}

fn change(flags: u16, rel_ns: u64) -> libc::kevent {
    libc::kevent {
        ident: IDENT,
        filter: libc::EVFILT_TIMER,
        flags,
        fflags: libc::NOTE_NSECONDS,
        data: libc::intptr_t::try_from(rel_ns).unwrap_or(libc::intptr_t::MAX),
        udata: std::ptr::null_mut(),
    }
}

impl Timer {
    /// Creates the private kqueue (one `kqueue`, close-on-exec).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: kqueue takes no arguments; a negative result is checked below.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own and nothing else closes.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD with an integer flag on our own descriptor.
        unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Self { kq, armed: None })
    }

    /// Registers the private kqueue with `registry`: an expiry is a readable event with `token`.
    pub(crate) fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.kq.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )
    }

    fn kevent(&self, changes: &[libc::kevent], out: &mut [libc::kevent]) -> io::Result<usize> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both slices are valid for their lengths; a zero timeout never blocks.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                changes.as_ptr(),
                changes.len() as libc::c_int,
                out.as_mut_ptr(),
                out.len() as libc::c_int,
                &zero,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Arms the timer to fire `at_ns` (crate clock); `None` disarms. A no-op when unchanged or
    /// when an earlier pending deadline is kept (see `keep_earlier`). One `kevent` at most.
    pub(crate) fn set(&mut self, at_ns: Option<u64>, now_ns: u64) -> io::Result<()> {
        if at_ns == self.armed || super::keep_earlier(self.armed, at_ns, now_ns) {
            return Ok(());
        }
        let previous = self.armed;
        self.armed = at_ns;
        let ev = match at_ns {
            // EV_ADD on an existing ident replaces its deadline.
            Some(at) => change(
                libc::EV_ADD | libc::EV_ONESHOT,
                at.saturating_sub(now_ns).max(1),
            ),
            None if previous.is_some() => change(libc::EV_DELETE, 0),
            None => return Ok(()),
        };
        match self.kevent(&[ev], &mut []) {
            Ok(_) => Ok(()),
            // Deleting a one-shot timer that already fired: nothing to delete.
            Err(e) if at_ns.is_none() && e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => {
                self.armed = None;
                Err(e)
            }
        }
    }

    /// Takes a fired expiry out of the private kqueue (clears its readiness). Forgets the
    /// deadline.
    pub(crate) fn acknowledge(&mut self) {
        let mut out = [change(0, 0)];
        let _ = self.kevent(&[], &mut out);
        self.armed = None;
    }

    /// What to pass to `Poll::poll` as timeout: none, the kqueue timer does the waking.
    pub(crate) fn poll_timeout(&self, _now_ns: u64) -> Option<Duration> {
        None
    }
}

/// No timer slack to set on macOS; returns false.
pub(crate) fn set_timer_slack_1ns() -> bool {
    false
}

/// No per-thread scheduler slice to ask for here: a no-op returning `false`.
pub(crate) fn request_short_slice() -> bool {
    false
}
