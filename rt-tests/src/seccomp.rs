//! A per-thread seccomp-BPF filter that lets through only clock reads and traps everything else
//! with `SIGSYS`, and counts the traps made inside the endpoint's window.
//!
//! The `SIGSYS` handler (installed process-wide, but only a filtered thread can receive a
//! seccomp `SIGSYS`) counts the trap and makes the call return `-EPERM` (a sleep returns `0`
//! at once instead, since `std::thread::sleep` treats any error but `EINTR` as a bug), so the
//! thread continues: the measured section can then report how many forbidden calls it made
//! instead of dying. Only traps made while the thread is inside the window ([`enter_window`] ..
//! [`exit_window`], which the simulated driver puts around `begin_callback` .. `end_callback`)
//! are counted in [`window_traps`] and recorded in [`trapped_numbers`]. The handler only touches
//! atomics (async-signal-safe).
//!
//! Allowed: `clock_gettime`, `gettimeofday` (clock reads, normally served by the vDSO without a
//! system call at all; the driver needs its clock), `rt_sigreturn` (return from the handler),
//! `exit` (thread exit). Anything else traps, sleeps included — `nanosleep`/`clock_nanosleep`,
//! `futex` (a lock), `mmap`/`brk`/`munmap`/`madvise` (allocation), `write`/`sendto` (I/O),
//! `sched_yield`. The driver waits between callbacks by spinning on the clock, outside the
//! window.
//!
//! `SECCOMP_MODE_STRICT` is not used: it kills the thread even on clock reads here.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

static TRAPS: AtomicU64 = AtomicU64::new(0);
static WINDOW_TRAPS: AtomicU64 = AtomicU64::new(0);
static IN_WINDOW: AtomicBool = AtomicBool::new(false);
static FIRST_NR: AtomicI64 = AtomicI64::new(-1);
static LAST_NR: AtomicI64 = AtomicI64::new(-1);

/// Marks the start of the endpoint's window (before `begin_callback`). One filtered thread at a
/// time (the simulation serialises seccomp runs).
#[inline]
pub fn enter_window() {
    IN_WINDOW.store(true, Ordering::SeqCst);
}

/// Marks the end of the endpoint's window (after `end_callback`).
#[inline]
pub fn exit_window() {
    IN_WINDOW.store(false, Ordering::SeqCst);
}

/// Traps counted inside the window since the last [`reset`].
pub fn window_traps() -> u64 {
    WINDOW_TRAPS.load(Ordering::SeqCst)
}

/// Forgets earlier traps (call with no filtered thread running).
pub fn reset() {
    TRAPS.store(0, Ordering::SeqCst);
    WINDOW_TRAPS.store(0, Ordering::SeqCst);
    IN_WINDOW.store(false, Ordering::SeqCst);
    FIRST_NR.store(-1, Ordering::SeqCst);
    LAST_NR.store(-1, Ordering::SeqCst);
}

/// Why the filter could not be installed.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Traps counted since the last [`reset`], inside the window or not.
pub fn traps() -> u64 {
    TRAPS.load(Ordering::SeqCst)
}

/// The first and the most recent system call numbers trapped inside the window (`-1` if none).
pub fn trapped_numbers() -> (i64, i64) {
    (
        FIRST_NR.load(Ordering::SeqCst),
        LAST_NR.load(Ordering::SeqCst),
    )
}

/// Whether a missing seccomp is explicitly tolerated (`LOOPHOLE_ALLOW_NO_SECCOMP=1`).
pub fn may_skip() -> bool {
    std::env::var("LOOPHOLE_ALLOW_NO_SECCOMP").is_ok_and(|v| v == "1")
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
    const X32_BIT: u32 = 0x4000_0000;

    extern "C" fn on_sigsys(
        _sig: libc::c_int,
        _info: *mut libc::siginfo_t,
        ctx: *mut libc::c_void,
    ) {
        let uc = ctx.cast::<libc::ucontext_t>();
        // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler; after a seccomp
        // trap RAX holds the system call number, and writing RAX sets the call's return value.
        let nr = unsafe {
            let regs = &mut (*uc).uc_mcontext.gregs;
            let nr = regs[libc::REG_RAX as usize];
            let sleep = nr == libc::SYS_nanosleep || nr == libc::SYS_clock_nanosleep;
            regs[libc::REG_RAX as usize] = if sleep { 0 } else { -(libc::EPERM as i64) };
            nr
        };
        TRAPS.fetch_add(1, Ordering::SeqCst);
        if IN_WINDOW.load(Ordering::SeqCst) {
            WINDOW_TRAPS.fetch_add(1, Ordering::SeqCst);
            let _ = FIRST_NR.compare_exchange(-1, nr, Ordering::SeqCst, Ordering::SeqCst);
            LAST_NR.store(nr, Ordering::SeqCst);
        }
    }

    /// Installs the process-wide `SIGSYS` handler. Call before spawning the filtered thread.
    pub fn install_handler() -> Result<(), Unavailable> {
        // SAFETY: zeroed sigaction is valid; we set a handler with the SA_SIGINFO signature.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(Unavailable(format!(
                "sigaction(SIGSYS): {}",
                std::io::Error::last_os_error()
            )))
        }
    }

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jeq(k: u32, jt: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf: 0,
            k,
        }
    }

    /// The allowed system calls.
    pub fn allowed() -> [i64; 4] {
        [
            libc::SYS_clock_gettime,
            libc::SYS_gettimeofday,
            libc::SYS_rt_sigreturn,
            libc::SYS_exit,
        ]
    }

    /// Builds the BPF program: wrong arch or x32 → trap; allowed number → allow; else → trap.
    fn program() -> Vec<libc::sock_filter> {
        let ld_w_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret_k = libc::BPF_RET | libc::BPF_K;
        let allowed = allowed();
        let n = allowed.len() as u8;
        let mut p = vec![
            stmt(ld_w_abs, 4), // seccomp_data.arch
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 1,
                jf: 0,
                k: AUDIT_ARCH_X86_64,
            },
            stmt(ret_k, SECCOMP_RET_TRAP),
            stmt(ld_w_abs, 0), // seccomp_data.nr
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
                jt: n,
                jf: 0,
                k: X32_BIT,
            },
        ];
        for (i, &nr) in allowed.iter().enumerate() {
            // Jump over the remaining comparisons and the trap to the final ALLOW.
            p.push(jeq(nr as u32, n - i as u8));
        }
        p.push(stmt(ret_k, SECCOMP_RET_TRAP));
        p.push(stmt(ret_k, SECCOMP_RET_ALLOW));
        p
    }

    /// Installs the filter on the calling thread only (no TSYNC). Irreversible for the thread.
    ///
    /// The program is built before the filter is active (it allocates); nothing after the
    /// `seccomp` call allocates.
    pub fn install_on_current_thread() -> Result<(), Unavailable> {
        let prog = program();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: plain prctl/seccomp calls with a valid, live filter program.
        let (a, b) = unsafe {
            let a = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let b = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            );
            (a, b)
        };
        if a != 0 {
            return Err(Unavailable(format!(
                "prctl(NO_NEW_PRIVS): {}",
                std::io::Error::last_os_error()
            )));
        }
        if b != 0 {
            return Err(Unavailable(format!(
                "seccomp(SET_MODE_FILTER): {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod imp {
    use super::Unavailable;
    pub fn install_handler() -> Result<(), Unavailable> {
        Err(Unavailable(
            "seccomp filter only implemented for linux x86_64".into(),
        ))
    }
    pub fn install_on_current_thread() -> Result<(), Unavailable> {
        install_handler()
    }
    pub fn allowed() -> [i64; 0] {
        []
    }
}

pub use imp::{allowed, install_handler, install_on_current_thread};
