//! Windows room: a high-resolution waitable timer for sub-millisecond wake-ups, supervisor
//! liveness through process handles.
//!
//! mio's poll on Windows is `GetQueuedCompletionStatusEx`, whose timeout is whole milliseconds
//! on the system tick (15.6 ms unless some process raised the timer resolution). The deadline
//! is therefore kept in a waitable timer created with `CREATE_WAITABLE_TIMER_HIGH_RESOLUTION`
//! (Windows 10 1803 and later). A waitable timer is no completion-port source, so one helper
//! thread per server waits on it and, at expiry, sends one byte over a connected loopback UDP
//! pair whose receiving end is registered with mio under the timer's token. (A `mio::Waker`
//! would be cheaper, but mio allows one per `Poll`, and the server's own waker is that one.)
//! Cost: one idle thread, two loopback UDP sockets, and per timed wake-up a thread switch and
//! one datagram.
//!
//! Fallback: where the high-resolution flag is refused (older Windows), an ordinary waitable
//! timer, whose precision is the system timer resolution. [`Timer::high_resolution`] tells
//! which one was had.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_INVALID_PARAMETER, FILETIME, HANDLE, INVALID_HANDLE_VALUE,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    CancelWaitableTimer, CreateWaitableTimerExW, GetCurrentProcess, GetProcessTimes, OpenProcess,
    SetWaitableTimerEx, WaitForSingleObject, CREATE_WAITABLE_TIMER_HIGH_RESOLUTION, INFINITE,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, TIMER_ALL_ACCESS,
};

/// An owned kernel handle, closed on drop.
#[derive(Debug)]
struct Handle(HANDLE);

// SAFETY: a kernel handle is a process-wide index, usable from any thread; the waitable timer
// is only set by the network thread and only waited on by the helper thread.
unsafe impl Send for Handle {}
// SAFETY: as above; every call on the handle is thread-safe in the kernel.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: we own the handle and close it once.
        unsafe { CloseHandle(self.0) };
    }
}

#[derive(Debug)]
struct Shared {
    timer: Handle,
    quit: AtomicBool,
}

/// A one-shot waitable timer that wakes mio's poll through a helper thread.
#[derive(Debug)]
pub(crate) struct Timer {
    shared: Arc<Shared>,
    high_resolution: bool,
    thread: Option<JoinHandle<()>>,
    /// The receiving end of the helper thread's expiry datagrams.
    rx: Option<mio::net::UdpSocket>,
    armed: Option<u64>,
}

/// Expiry datagrams taken per `acknowledge` (one per expiry; more only after missed wake-ups).
const DRAIN_MAX: usize = 16;

impl Timer {
    /// Creates the disarmed timer, high-resolution where the system offers it. Allocates (the
    /// shared state); no thread yet.
    pub(crate) fn new() -> io::Result<Self> {
        let create = |flags| {
            // SAFETY: null attributes and name are allowed; the result is checked.
            unsafe {
                CreateWaitableTimerExW(std::ptr::null(), std::ptr::null(), flags, TIMER_ALL_ACCESS)
            }
        };
        let mut high_resolution = true;
        let mut h = create(CREATE_WAITABLE_TIMER_HIGH_RESOLUTION);
        if h.is_null() {
            high_resolution = false;
            h = create(0);
        }
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            timer: Handle(h),
            quit: AtomicBool::new(false),
        });
        Ok(Self {
            shared,
            high_resolution,
            thread: None,
            rx: None,
            armed: None,
        })
    }

    /// Whether the timer is the high-resolution kind (else the system tick is its precision).
    #[allow(dead_code)]
    pub(crate) fn high_resolution(&self) -> bool {
        self.high_resolution
    }

    /// Starts the helper thread that turns each expiry into a readable event with `token`: it
    /// sends one byte to a loopback UDP socket registered with `registry`. Both sockets are
    /// connected to each other, so no other sender's datagram is received.
    pub(crate) fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<()> {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut rx = mio::net::UdpSocket::bind(loopback)?;
        let tx = std::net::UdpSocket::bind(loopback)?;
        tx.connect(rx.local_addr()?)?;
        rx.connect(tx.local_addr()?)?;
        registry.register(&mut rx, token, mio::Interest::READABLE)?;
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("loophole-net-timer".into())
            .spawn(move || loop {
                // SAFETY: the handle stays open while `shared` lives, which this thread holds.
                let r = unsafe { WaitForSingleObject(shared.timer.0, INFINITE) };
                if r != WAIT_OBJECT_0 || shared.quit.load(Ordering::Acquire) {
                    return;
                }
                let _ = tx.send(&[1]);
            })?;
        self.rx = Some(rx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Arms the timer to fire `at_ns` (crate clock); `None` disarms. A no-op when unchanged or
    /// when an earlier pending deadline is kept (see `keep_earlier`). One system call at most.
    pub(crate) fn set(&mut self, at_ns: Option<u64>, now_ns: u64) -> io::Result<()> {
        if at_ns == self.armed || super::keep_earlier(self.armed, at_ns, now_ns) {
            return Ok(());
        }
        self.armed = at_ns;
        let ok = match at_ns {
            Some(at) => self.arm_in(at.saturating_sub(now_ns)),
            // SAFETY: our own timer handle.
            None => unsafe { CancelWaitableTimer(self.shared.timer.0) != 0 },
        };
        if ok {
            Ok(())
        } else {
            self.armed = None;
            Err(io::Error::last_os_error())
        }
    }

    /// Arms for `rel_ns` from now, rounded up to the timer's 100 ns unit (never early).
    fn arm_in(&self, rel_ns: u64) -> bool {
        // Negative: relative to now, in 100 ns units.
        let due = -i64::try_from(rel_ns.div_ceil(100).max(1)).unwrap_or(i64::MAX);
        // SAFETY: `due` lives on our stack for the call; no completion routine, no context.
        unsafe {
            SetWaitableTimerEx(
                self.shared.timer.0,
                &due,
                0,
                None,
                std::ptr::null(),
                std::ptr::null(),
                0,
            ) != 0
        }
    }

    /// Takes the expiry datagrams (to `WouldBlock`, which re-arms mio's readiness on Windows;
    /// at most [`DRAIN_MAX`] per call). Forgets the deadline.
    pub(crate) fn acknowledge(&mut self) {
        if let Some(rx) = &self.rx {
            let mut buf = [0u8; 8];
            for _ in 0..DRAIN_MAX {
                if rx.recv(&mut buf).is_err() {
                    break;
                }
            }
        }
        self.armed = None;
    }

    /// What to pass to `Poll::poll` as timeout: none once the helper thread runs; before
    /// `register` (or if it failed), the deadline itself, at the poll's millisecond precision.
    pub(crate) fn poll_timeout(&self, now_ns: u64) -> Option<Duration> {
        if self.thread.is_some() {
            None
        } else {
            super::timeout_until(self.armed, now_ns)
        }
    }
}

impl Drop for Timer {
    /// Stops the helper thread: sets the quit flag and fires the timer at once.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.quit.store(true, Ordering::Release);
            if self.arm_in(0) {
                let _ = thread.join();
            }
        }
    }
}

/// No timer slack on Windows; returns false.
pub(crate) fn set_timer_slack_1ns() -> bool {
    false
}

/// No per-thread scheduler slice to ask for here: a no-op returning `false`.
pub(crate) fn request_short_slice() -> bool {
    false
}

fn open(pid: u32) -> Option<Handle> {
    // SAFETY: plain call; a null result is checked.
    let h = unsafe {
        OpenProcess(
            PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
            0,
            pid,
        )
    };
    (!h.is_null()).then_some(Handle(h))
}

/// Whether process `pid` still runs. A process we may not open (another user's) counts as
/// alive, like `EPERM` on Unix; only "no such process" counts as gone.
pub(crate) fn process_alive(pid: u32) -> bool {
    match open(pid) {
        // SAFETY: a process handle with SYNCHRONIZE; a zero timeout never blocks.
        Some(h) => unsafe { WaitForSingleObject(h.0, 0) == WAIT_TIMEOUT },
        // SAFETY: plain call.
        None => (unsafe { GetLastError() }) != ERROR_INVALID_PARAMETER,
    }
}

fn creation_time(h: HANDLE) -> Option<u64> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: four FILETIMEs on our stack; `h` is a process handle with query rights.
    let ok = unsafe { GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// The parent's pid from a process snapshot (0 when not found).
fn parent_from_snapshot() -> u32 {
    // SAFETY: plain call; the result is checked.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snap == INVALID_HANDLE_VALUE {
        return 0;
    }
    let snap = Handle(snap);
    let me = std::process::id();
    // SAFETY: PROCESSENTRY32W is plain data; all-zero is valid once dwSize is set.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
    // SAFETY: `entry` is a valid PROCESSENTRY32W with its size set; `snap` is open.
    let mut more = unsafe { Process32FirstW(snap.0, &mut entry) } != 0;
    while more {
        if entry.th32ProcessID == me {
            return entry.th32ParentProcessID;
        }
        // SAFETY: as above.
        more = unsafe { Process32NextW(snap.0, &mut entry) } != 0;
    }
    0
}

/// The parent process id while the parent that started us runs; 0 once it has exited.
///
/// Windows does not re-parent orphans, so "the parent id changed" (the Unix test of the orphan
/// policy) is made true here by answering 0 when that process is gone, or when its pid now
/// names a younger process (pid reuse: a parent is never younger than its child). The first
/// call takes a process snapshot (allocates in the kernel); later ones open one handle.
pub(crate) fn parent_pid() -> u32 {
    static PARENT: OnceLock<u32> = OnceLock::new();
    let pid = *PARENT.get_or_init(parent_from_snapshot);
    let Some(parent) = open(pid).filter(|_| pid != 0) else {
        return 0;
    };
    // SAFETY: a zero timeout never blocks; the handle has SYNCHRONIZE.
    let running = unsafe { WaitForSingleObject(parent.0, 0) } == WAIT_TIMEOUT;
    // SAFETY: the pseudo-handle of this process needs no closing.
    let mine = creation_time(unsafe { GetCurrentProcess() });
    let older = match (creation_time(parent.0), mine) {
        (Some(p), Some(m)) => p <= m,
        _ => true,
    };
    if running && older {
        pid
    } else {
        0
    }
}
