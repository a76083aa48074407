//! Linux room: a `timerfd` for sub-millisecond wake-ups, and timer slack.
//!
//! `epoll_wait` takes whole milliseconds, so deadlines are kept in a `timerfd` (nanosecond
//! resolution) registered with mio. The poll itself waits without a timeout, except for a
//! deadline 2 ms or more ahead: that one waits in the poll's timeout, ending 1–2 ms before it,
//! and the pass that wakes sets the timerfd for the rest.
//!
//! [`set_timer_slack_1ns`] sets `PR_SET_TIMERSLACK` to 1 ns for the calling thread: by default
//! Linux may delay a timer of a normal-priority thread by up to 50 µs to batch wake-ups, which is
//! the whole margin we leave after the audio callback.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use mio::unix::SourceFd;

/// Deadlines at least this far ahead (ns) are not set in the timerfd: the poll's own
/// millisecond timeout wakes the thread 1–2 ms ahead of them, and the pass then sets the
/// timerfd for the rest. The timerfd fires exactly, the poll timeout lands early, never late.
/// Why: after an answer, the next deadline is usually far (heartbeat, telemetry), and a
/// `timerfd_settime` there is on the answered client's path whenever it shares this thread's
/// CPU (it runs once the thread blocks). Steady traffic with far deadlines costs no timer call.
const FAR_NS: u64 = 2_000_000;

/// A one-shot monotonic timer that mio can wait on.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
    armed: Option<u64>,
    /// A far deadline (≥ [`FAR_NS`] ahead when chosen) left to the poll's timeout.
    coarse: Option<u64>,
    /// `CLOCK_MONOTONIC` minus the crate clock (ns), read once: deadlines are set as absolute
    /// `CLOCK_MONOTONIC` times, so the time between choosing a deadline and the system call
    /// that sets it does not make the wake-up late.
    offset_ns: u64,
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
        // The crate clock first, then CLOCK_MONOTONIC: the offset errs by the gap between the
        // two reads (tens of ns) on the late side, never early.
        let crate_ns = crate::clock::now_ns();
        let mut mono = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `mono` is a valid timespec on our stack; CLOCK_MONOTONIC always exists.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mono_ns = (mono.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(mono.tv_nsec as u64);
        Ok(Self {
            fd,
            armed: None,
            coarse: None,
            offset_ns: mono_ns.saturating_sub(crate_ns),
        })
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
    /// when an earlier pending deadline is kept (see `keep_earlier`). A deadline [`FAR_NS`] or
    /// more after `now_ns` (the current crate clock time) is left to the poll's timeout
    /// ([`poll_timeout`](Self::poll_timeout)), no system call; a nearer one is set as the
    /// absolute time `at_ns`. One `timerfd_settime` at most.
    pub(crate) fn set(&mut self, at_ns: Option<u64>, now_ns: u64) -> io::Result<()> {
        self.coarse = None;
        if at_ns == self.armed || super::keep_earlier(self.armed, at_ns, now_ns) {
            return Ok(());
        }
        if let Some(at) = at_ns.filter(|&at| at.saturating_sub(now_ns) >= FAR_NS) {
            // An armed deadline still ahead is nearer than this one (it was set < 2 ms ahead) and
            // was kept above. One that expired during this pass, its event not yet seen, is left
            // as it is (disarming would be the system call this path saves): the next poll
            // returns at once, one spare pass with nothing due.
            self.coarse = Some(at);
            return Ok(());
        }
        self.armed = at_ns;
        // An absolute CLOCK_MONOTONIC time (`TFD_TIMER_ABSTIME`): one already passed fires at
        // once. A zero it_value disarms, so an armed deadline is kept at 1 ns or later.
        let abs = at_ns.map_or(0, |at| at.saturating_add(self.offset_ns).max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (abs / 1_000_000_000) as libc::time_t,
                tv_nsec: (abs % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec on our stack; the old-value pointer may be null.
        let r = unsafe {
            libc::timerfd_settime(
                self.raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Forgets a fired deadline. No system call: the expiry count is left unread, because
    /// mio registers the timer edge-triggered (`EPOLLET`), so every later expiry is a new wake-up
    /// of the poll whatever the count, and a count left unread makes no event by itself (tests:
    /// `an_unread_timer_fires_again_and_only_when_armed`). This takes one `read` off the path
    /// between the wake-up after the audio callback and the ack's `sendto`.
    pub(crate) fn acknowledge(&mut self) {
        self.armed = None;
    }

    /// What to pass to `Poll::poll` as timeout: none when the timerfd does the waking; for a far
    /// deadline, the whole milliseconds left less one, so the poll returns 1–2 ms ahead of it
    /// (a whole number: mio's rounding up changes nothing; the thread's timer slack is 1 ns;
    /// the margin absorbs the time to enter `epoll_wait` and its wake-up). Zero once less
    /// than 2 ms are left: the pass comes at once and sets the timerfd.
    pub(crate) fn poll_timeout(&self, now_ns: u64) -> Option<Duration> {
        self.coarse.map(|at| {
            let left_ms = at.saturating_sub(now_ns) / 1_000_000;
            Duration::from_millis(left_ms.saturating_sub(1))
        })
    }
}

/// Sets the calling thread's timer slack to 1 ns. Returns whether it took effect.
pub(crate) fn set_timer_slack_1ns() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument, no pointer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// The scheduler slice the network thread asks for: 100 µs. Under EEVDF (Linux ≥ 6.12) a woken
/// task whose slice is shorter than the running one's may preempt it, so the thread's wake-up
/// after an audio callback waits less behind a busy task sharing its CPU.
pub(crate) const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of `sched_setattr(2)`, first version (48 bytes; not in `libc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// `SCHED_FLAG_RESET_ON_FORK`: the only flag kept when the slice is set.
const RESET_ON_FORK: u64 = 0x01;

/// The attributes that ask for `slice_ns` and keep everything else the host chose (nice,
/// reset-on-fork); `None` unless the thread is `SCHED_OTHER` (a real-time, batch or idle policy
/// is left alone).
fn with_slice(current: SchedAttr, slice_ns: u64) -> Option<SchedAttr> {
    (current.sched_policy == libc::SCHED_OTHER as u32).then_some(SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        sched_policy: current.sched_policy,
        sched_flags: current.sched_flags & RESET_ON_FORK,
        sched_nice: current.sched_nice,
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
    })
}

/// The calling thread's scheduling attributes (`sched_getattr`), or `None`.
fn current_attr() -> Option<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a writable `sched_attr` of the size passed; pid 0 = the calling thread,
    // flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size_of::<SchedAttr>() as libc::c_uint,
            0,
        )
    };
    (rc == 0).then_some(attr)
}

/// Asks for a [`SHORT_SLICE_NS`] slice for the calling thread if it is `SCHED_OTHER`, keeping
/// its nice value and policy. Returns whether `sched_setattr` accepted it: false when the call
/// is refused (a seccomp filter, no such call) or the thread runs another policy; true also on
/// kernels 3.14–6.11, which accept the attribute and ignore the slice of a `SCHED_OTHER` thread
/// (see [`short_slice_takes_effect`]). Two system calls, no allocation.
pub(crate) fn request_short_slice() -> bool {
    let Some(attr) = current_attr().and_then(|a| with_slice(a, SHORT_SLICE_NS)) else {
        return false;
    };
    // SAFETY: `attr` is a valid `sched_attr` with its size set, alive for the call; pid 0 = the
    // calling thread, flags 0.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}

/// The calling thread's scheduler slice in ns as the kernel reports it (`sched_runtime` of a
/// `SCHED_OTHER` thread on Linux ≥ 6.12; 0 before).
fn current_slice_ns() -> Option<u64> {
    current_attr().map(|a| a.sched_runtime)
}

/// Whether this kernel gives a thread the slice it asks for: a new thread asks, then reads its
/// slice back. Spawns and joins one thread; for tests.
pub(crate) fn short_slice_takes_effect() -> bool {
    std::thread::spawn(|| request_short_slice() && current_slice_ns() == Some(SHORT_SLICE_NS))
        .join()
        .unwrap_or(false)
}

#[cfg(test)]
mod slice_tests {
    use super::*;

    fn other(nice: i32, flags: u64) -> SchedAttr {
        SchedAttr {
            size: size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: flags,
            sched_nice: nice,
            sched_runtime: 2_800_000,
            ..SchedAttr::default()
        }
    }

    #[test]
    fn the_slice_keeps_the_hosts_nice_and_leaves_other_policies_alone() {
        let got = with_slice(other(5, RESET_ON_FORK | 0x20), SHORT_SLICE_NS).unwrap();
        assert_eq!(
            (got.sched_nice, got.sched_flags, got.sched_runtime),
            (5, RESET_ON_FORK, SHORT_SLICE_NS)
        );
        for policy in [
            libc::SCHED_FIFO,
            libc::SCHED_RR,
            libc::SCHED_BATCH,
            libc::SCHED_IDLE,
        ] {
            let attr = SchedAttr {
                sched_policy: policy as u32,
                ..other(0, 0)
            };
            assert_eq!(with_slice(attr, SHORT_SLICE_NS), None, "policy {policy}");
        }
    }

    /// Where the kernel honours slices, a thread that asked has the short slice and the nice
    /// value it had before (set to 2 here, as a host might); one that did not (the control)
    /// has the default, longer one.
    #[test]
    fn a_thread_that_asks_gets_the_short_slice_and_keeps_its_nice() {
        if !short_slice_takes_effect() {
            eprintln!("this kernel does not honour a requested slice: nothing to check");
            return;
        }
        let (default_slice, slice, nice_before, nice_after) = std::thread::spawn(|| {
            // SAFETY: plain integer arguments; on Linux the nice value is per thread and
            // `gettid` names the calling one. Raising nice needs no privilege.
            let reniced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as _, 2) };
            assert_eq!(reniced, 0);
            let before = (current_slice_ns(), current_attr().map(|a| a.sched_nice));
            assert!(request_short_slice());
            let after = current_attr().map(|a| a.sched_nice);
            (before.0, current_slice_ns(), before.1, after)
        })
        .join()
        .unwrap();
        assert_eq!(slice, Some(SHORT_SLICE_NS));
        assert_ne!(default_slice, Some(SHORT_SLICE_NS), "the control");
        assert_eq!((nice_before, nice_after), (Some(2), Some(2)));
    }
}
