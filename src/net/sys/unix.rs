//! Every Unix: supervisor liveness and the parent process id. No allocation, no blocking.
#![allow(unsafe_code)]

use std::io;

/// Whether process `pid` still exists (`kill(pid, 0)` does not fail with `ESRCH`; `EPERM`, a
/// process of another user, counts as alive).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The parent process id. It changes (to 1 or a subreaper) when the parent exits.
pub(crate) fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}
