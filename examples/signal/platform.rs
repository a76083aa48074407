//! The OS plumbing of the simulated device, one room per OS behind one interface:
//!
//! | function | Linux | macOS | Windows |
//! |---|---|---|---|
//! | [`mono_ns`] | `CLOCK_MONOTONIC` (vDSO) | `mach_absolute_time` | `Instant` (QueryPerformanceCounter) |
//! | [`sleep_until`] (absolute deadline) | `clock_nanosleep(TIMER_ABSTIME)` | `mach_wait_until` | high-resolution waitable timer, to the deadline |
//! | [`request_realtime`] | `SCHED_FIFO` | time-constraint thread policy | MMCSS "Pro Audio", else `THREAD_PRIORITY_TIME_CRITICAL` |
//! | stop signals | SIGINT/SIGTERM, blocked outside the main thread | same | console control handler (Ctrl-C, Ctrl-Break, close) |
//!
//! The only module of the `signal` example with `unsafe` code; every block is one OS call with
//! a `// SAFETY:` note. The sleep and clock run on the audio thread between callbacks (never
//! inside one); everything else at start-up or on the main thread.
#![allow(unsafe_code)]

pub use imp::{
    block_stop_signals, mono_ns, request_realtime, signal_name, sleep_until, stop_signal,
    unblock_and_catch_stop_signals,
};

use std::sync::atomic::{AtomicI32, Ordering};

/// The stop signal (or console event + 1 on Windows) received, 0 if none. Written only by the
/// handler.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn stop_signal_code() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

#[cfg(unix)]
mod imp {
    use super::{stop_signal_code, STOP_SIGNAL};
    use std::sync::atomic::Ordering;

    #[cfg(target_os = "linux")]
    pub use super::linux::{mono_ns, request_realtime, sleep_until};
    #[cfg(target_vendor = "apple")]
    pub use super::macos::{mono_ns, request_realtime, sleep_until};

    extern "C" fn on_stop_signal(sig: libc::c_int) {
        // An atomic store is async-signal-safe; the handler does nothing else.
        STOP_SIGNAL.store(sig, Ordering::Relaxed);
    }

    /// The stop signal received so far, if any.
    pub fn stop_signal() -> Option<i32> {
        stop_signal_code()
    }

    /// A signal's name for messages.
    pub fn signal_name(sig: i32) -> &'static str {
        match sig {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "signal",
        }
    }

    fn stop_set() -> libc::sigset_t {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it fully.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            set
        }
    }

    /// Blocks SIGINT/SIGTERM in the calling thread. Threads spawned afterwards inherit the mask,
    /// so call it before starting the network and audio threads: the signals then only reach
    /// the thread that calls [`unblock_and_catch_stop_signals`], and never interrupt the audio
    /// thread.
    pub fn block_stop_signals() {
        let set = stop_set();
        // SAFETY: valid set pointer; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    }

    /// Installs the SIGINT/SIGTERM handler (it only sets an atomic) and unblocks both signals in
    /// the calling thread.
    pub fn unblock_and_catch_stop_signals() {
        // SAFETY: sigaction is plain data; the handler is an `extern "C" fn(c_int)` that only
        // does an atomic store (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
            libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        }
        let set = stop_set();
        // SAFETY: valid set pointer; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    /// `CLOCK_MONOTONIC` in nanoseconds (vDSO: no system call).
    pub fn mono_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute: no drift, retried on
    /// EINTR).
    pub fn sleep_until(deadline_ns: u64) {
        let ts = libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
            let r = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &ts,
                    std::ptr::null_mut(),
                )
            };
            if r != libc::EINTR {
                return;
            }
        }
    }

    /// Asks for `SCHED_FIFO` at `priority` (clamped to the system's range) for the calling
    /// thread. Returns what was granted ("SCHED_FIFO at priority N"), or the OS error
    /// (typically `EPERM` without `CAP_SYS_NICE` or an `rtprio` limit).
    pub fn request_realtime(priority: i32) -> io::Result<String> {
        // SAFETY: plain queries with a valid policy constant.
        let (min, max) = unsafe {
            (
                libc::sched_get_priority_min(libc::SCHED_FIFO),
                libc::sched_get_priority_max(libc::SCHED_FIFO),
            )
        };
        let priority = priority.clamp(min, max);
        // SAFETY: sched_param is plain old data; all-zero is a valid value.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = priority;
        // SAFETY: `pthread_self()` is the calling thread; `param` is a valid sched_param.
        let r =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if r == 0 {
            Ok(format!("SCHED_FIFO at priority {priority}"))
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }
}

/// macOS: built in CI, not run (no Mac there): see docs/platforms.md.
#[cfg(target_vendor = "apple")]
mod macos {
    use mach2::mach_time::{
        mach_absolute_time, mach_timebase_info, mach_timebase_info as Timebase, mach_wait_until,
    };
    use mach2::thread_policy::{
        thread_policy_set, thread_time_constraint_policy, THREAD_TIME_CONSTRAINT_POLICY,
        THREAD_TIME_CONSTRAINT_POLICY_COUNT,
    };
    use std::io;
    use std::sync::OnceLock;

    /// (numer, denom): nanoseconds = ticks * numer / denom.
    fn timebase() -> (u128, u128) {
        static TB: OnceLock<(u128, u128)> = OnceLock::new();
        *TB.get_or_init(|| {
            let mut tb = Timebase { numer: 0, denom: 0 };
            // SAFETY: `tb` is a valid, writable mach_timebase_info.
            unsafe { mach_timebase_info(&mut tb) };
            (u128::from(tb.numer.max(1)), u128::from(tb.denom.max(1)))
        })
    }

    /// `mach_absolute_time` in nanoseconds (commpage: no system call).
    pub fn mono_ns() -> u64 {
        let (n, d) = timebase();
        // SAFETY: no arguments.
        let t = u128::from(unsafe { mach_absolute_time() });
        u64::try_from(t * n / d).unwrap_or(u64::MAX)
    }

    /// Sleeps until [`mono_ns`] reaches `deadline_ns` (absolute: no drift).
    pub fn sleep_until(deadline_ns: u64) {
        let (n, d) = timebase();
        let ticks = u64::try_from(u128::from(deadline_ns) * d / n).unwrap_or(u64::MAX);
        // SAFETY: plain call; returns early only on an abort (then the device loop re-checks).
        unsafe { mach_wait_until(ticks) };
    }

    /// Asks for the time-constraint (real-time) thread policy: 0.5 ms of computation within a
    /// 2 ms constraint, no fixed period. `priority` has no meaning here; returns a description of the policy granted.
    pub fn request_realtime(_priority: i32) -> io::Result<String> {
        let (n, d) = timebase();
        let ticks = |ns: u128| u32::try_from(ns * d / n).unwrap_or(u32::MAX);
        let mut policy = thread_time_constraint_policy {
            period: 0,
            computation: ticks(500_000),
            constraint: ticks(2_000_000),
            preemptible: 1,
        };
        // SAFETY: the policy struct lives on our stack for the call and its size in integers is
        // the documented count; the port is the calling thread's (not a new right: no leak).
        let r = unsafe {
            thread_policy_set(
                libc::pthread_mach_thread_np(libc::pthread_self()),
                THREAD_TIME_CONSTRAINT_POLICY,
                (&raw mut policy).cast(),
                THREAD_TIME_CONSTRAINT_POLICY_COUNT,
            )
        };
        if r == 0 {
            Ok("the time-constraint thread policy (0.5 ms of computation in 2 ms)".into())
        } else {
            Err(io::Error::other(format!(
                "thread_policy_set(THREAD_TIME_CONSTRAINT_POLICY) failed: kern_return_t {r}"
            )))
        }
    }
}

#[cfg(windows)]
mod imp {
    use super::{stop_signal_code, STOP_SIGNAL};
    use std::cell::Cell;
    use std::io;
    use std::sync::atomic::Ordering;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
    };
    use windows_sys::Win32::System::Threading::{
        AvSetMmThreadCharacteristicsW, CreateWaitableTimerExW, GetCurrentThread, SetThreadPriority,
        SetWaitableTimerEx, WaitForSingleObject, CREATE_WAITABLE_TIMER_HIGH_RESOLUTION, INFINITE,
        THREAD_PRIORITY_TIME_CRITICAL, TIMER_ALL_ACCESS,
    };

    /// Nanoseconds since the process epoch (`Instant`: QueryPerformanceCounter).
    pub fn mono_ns() -> u64 {
        loophole_ipc::clock::now_ns()
    }

    thread_local! {
        /// The calling thread's waitable timer, created at its first sleep (never closed:
        /// one per device thread, for the process's life).
        static TIMER: Cell<HANDLE> = const { Cell::new(std::ptr::null_mut()) };
    }

    fn thread_timer() -> HANDLE {
        TIMER.with(|t| {
            if t.get().is_null() {
                let create = |flags| {
                    // SAFETY: null attributes and name are allowed; the result is checked.
                    unsafe {
                        CreateWaitableTimerExW(
                            std::ptr::null(),
                            std::ptr::null(),
                            flags,
                            TIMER_ALL_ACCESS,
                        )
                    }
                };
                let mut h = create(CREATE_WAITABLE_TIMER_HIGH_RESOLUTION);
                if h.is_null() {
                    h = create(0);
                }
                t.set(h);
            }
            t.get()
        })
    }

    /// Sleeps until [`mono_ns`] reaches `deadline_ns`: a high-resolution waitable timer set to
    /// the time left (the deadline itself is absolute, so lateness does not accumulate).
    pub fn sleep_until(deadline_ns: u64) {
        let left = deadline_ns.saturating_sub(mono_ns());
        if left == 0 {
            return;
        }
        let h = thread_timer();
        if h.is_null() {
            std::thread::sleep(std::time::Duration::from_nanos(left));
            return;
        }
        let due = -i64::try_from(left.div_ceil(100)).unwrap_or(i64::MAX);
        // SAFETY: our own timer handle; `due` lives on the stack for the call.
        unsafe {
            if SetWaitableTimerEx(h, &due, 0, None, std::ptr::null(), std::ptr::null(), 0) != 0 {
                WaitForSingleObject(h, INFINITE);
            }
        }
    }

    /// Joins the MMCSS "Pro Audio" task (Windows' audio scheduling class); where that is
    /// refused, `THREAD_PRIORITY_TIME_CRITICAL`. Returns which of the two was granted.
    pub fn request_realtime(_priority: i32) -> io::Result<String> {
        let task: Vec<u16> = "Pro Audio\0".encode_utf16().collect();
        let mut index = 0u32;
        // SAFETY: `task` is a NUL-terminated UTF-16 string; `index` is writable.
        let h = unsafe { AvSetMmThreadCharacteristicsW(task.as_ptr(), &mut index) };
        if !h.is_null() {
            return Ok(format!("in the MMCSS \"Pro Audio\" task (index {index})"));
        }
        let mmcss = io::Error::last_os_error();
        // SAFETY: the pseudo-handle of the calling thread.
        if unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_TIME_CRITICAL) } != 0 {
            Ok(format!(
                "at THREAD_PRIORITY_TIME_CRITICAL (MMCSS \"Pro Audio\" refused: {mmcss})"
            ))
        } else {
            Err(io::Error::last_os_error())
        }
    }

    unsafe extern "system" fn on_console_event(event: u32) -> BOOL {
        match event {
            CTRL_C_EVENT | CTRL_BREAK_EVENT | CTRL_CLOSE_EVENT => {
                // Runs on a thread the system creates; an atomic store is all it does.
                STOP_SIGNAL.store(event as i32 + 1, Ordering::Relaxed);
                1
            }
            _ => 0,
        }
    }

    /// The console event received so far (as its code + 1), if any.
    pub fn stop_signal() -> Option<i32> {
        stop_signal_code()
    }

    /// A console event's name for messages.
    pub fn signal_name(code: i32) -> &'static str {
        match u32::try_from(code - 1) {
            Ok(CTRL_C_EVENT) => "Ctrl-C",
            Ok(CTRL_BREAK_EVENT) => "Ctrl-Break",
            Ok(CTRL_CLOSE_EVENT) => "console close",
            _ => "console event",
        }
    }

    /// Nothing to block: console events arrive on a thread of their own, never the audio one.
    pub fn block_stop_signals() {}

    /// Installs the console control handler (it only sets an atomic).
    pub fn unblock_and_catch_stop_signals() {
        // SAFETY: the handler is a plain `extern "system"` function that only stores an atomic.
        unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
    }
}
