//! The few libc calls aura needs: stop signals, signalling the engine, and asking the kernel to
//! SIGTERM the engine if aura dies. The only module of the `aura` example with `unsafe` code.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // An atomic store is async-signal-safe; the handler does nothing else.
    STOP.store(true, Ordering::Relaxed);
}

/// Catches SIGINT and SIGTERM: they only set a flag that [`stop_requested`] reads, so aura can
/// shut its engine down politely before it exits.
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

/// Whether SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sends `sig` to process `pid`.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: kill(2) with a positive pid affects only that process.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Linux: the child gets SIGTERM when the thread that spawned it dies (aura killed with -9,
/// crashed). Spawn engines from the main thread. The engine also watches `--supervisor-pid`.
pub fn term_child_when_parent_dies(cmd: &mut Command) {
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
