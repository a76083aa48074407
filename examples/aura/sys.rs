//! aura's OS plumbing, one room per OS behind one interface: stop requests (SIGINT/SIGTERM;
//! Windows: console control events), a polite stop for the engine (SIGTERM; Windows:
//! Ctrl-Break to its process group), and "no orphan engine": Linux `PR_SET_PDEATHSIG`; macOS the
//! engine's own `--supervisor-pid` watch; Windows a job object that kills the engine when aura's
//! last handle to it closes, however aura ends. The engine also watches `--supervisor-pid`
//! everywhere. The only module of the `aura` example with `unsafe` code.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

pub use imp::{adopt_engine, catch_stop_signals, prepare_engine, terminate};

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether a stop was requested (SIGINT or SIGTERM; Windows: Ctrl-C, Ctrl-Break, close).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[cfg(unix)]
mod imp {
    use super::STOP;
    use std::io;
    use std::process::{Child, Command};
    use std::sync::atomic::Ordering;

    extern "C" fn on_stop_signal(_sig: libc::c_int) {
        // An atomic store is async-signal-safe; the handler does nothing else.
        STOP.store(true, Ordering::Relaxed);
    }

    /// Catches SIGINT and SIGTERM: they only set a flag that [`super::stop_requested`] reads,
    /// so aura can shut its engine down politely before it exits.
    pub fn catch_stop_signals() {
        // SAFETY: sigaction is plain data; the handler only does an atomic store.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
            libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        }
    }

    /// Sends SIGTERM to process `pid`.
    pub fn terminate(pid: u32) -> io::Result<()> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: kill(2) with a positive pid affects only that process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The engine gets its own process group (a terminal's Ctrl-C reaches aura, which then stops
    /// the engine politely) and, on Linux, SIGTERM when the thread that spawned it dies (aura
    /// killed with -9, crashed): spawn engines from the main thread.
    pub fn prepare_engine(cmd: &mut Command) {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        #[cfg(target_os = "linux")]
        term_child_when_parent_dies(cmd);
    }

    /// Nothing to do after the spawn on Unix.
    pub fn adopt_engine(_child: &Child) -> io::Result<()> {
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn term_child_when_parent_dies(cmd: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid, _exit-free raise via kill).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // The parent may have died before prctl: then we were re-parented already.
                if libc::getppid() as u32 != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
}

#[cfg(windows)]
mod imp {
    use super::STOP;
    use std::io;
    use std::os::windows::io::AsRawHandle as _;
    use std::os::windows::process::CommandExt as _;
    use std::process::{Child, Command};
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::System::Console::{
        GenerateConsoleCtrlEvent, SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT,
        CTRL_C_EVENT,
    };
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
        SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };
    use windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP;

    unsafe extern "system" fn on_console_event(event: u32) -> BOOL {
        match event {
            CTRL_C_EVENT | CTRL_BREAK_EVENT | CTRL_CLOSE_EVENT => {
                // Runs on a thread the system creates; an atomic store is all it does.
                STOP.store(true, Ordering::Relaxed);
                1
            }
            _ => 0,
        }
    }

    /// Catches Ctrl-C, Ctrl-Break and console close: they only set a flag.
    pub fn catch_stop_signals() {
        // SAFETY: the handler is a plain `extern "system"` function that only stores an atomic.
        unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
    }

    /// Sends Ctrl-Break to the engine's process group (it was started as a group of its own).
    pub fn terminate(pid: u32) -> io::Result<()> {
        // SAFETY: plain call; only the group `pid` (the engine's) receives the event.
        if unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) } != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The engine starts as a process group of its own (so Ctrl-Break can reach it alone).
    pub fn prepare_engine(cmd: &mut Command) {
        cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
    }

    /// aura's job object, kill-on-close. Its handle is never closed by aura: the kernel closes
    /// it when aura's process ends, however it ends, and then ends every process in the job.
    fn job() -> io::Result<isize> {
        static JOB: OnceLock<Result<isize, i32>> = OnceLock::new();
        let r = JOB.get_or_init(|| {
            // SAFETY: null attributes and name are allowed; the result is checked.
            let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if h.is_null() {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            // SAFETY: plain data; all-zero is a valid value before the limit flag is set.
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            // SAFETY: `info` lives on the stack for the call; its size is passed.
            let ok = unsafe {
                SetInformationJobObject(
                    h,
                    JobObjectExtendedLimitInformation,
                    (&raw const info).cast(),
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            Ok(h as isize)
        });
        r.map_err(io::Error::from_raw_os_error)
    }

    /// Puts the engine into aura's kill-on-close job object: it cannot outlive aura.
    pub fn adopt_engine(child: &Child) -> io::Result<()> {
        let job = job()? as windows_sys::Win32::Foundation::HANDLE;
        // SAFETY: both handles are open: the job for aura's life, the child's while `child` lives.
        if unsafe { AssignProcessToJobObject(job, child.as_raw_handle()) } != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
