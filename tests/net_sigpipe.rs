//! Writing to a vanished peer never raises SIGPIPE in the host process.
//!
//! Rust binaries ignore SIGPIPE by default, which would hide the problem, so each check runs in a
//! child process (this test binary re-run on one test) that first resets SIGPIPE to `SIG_DFL`:
//! a SIGPIPE there kills the child, and the parent sees the signal in the exit status.
//! The negative control shows the harness catches it: a raw `write(2)` (no `MSG_NOSIGNAL`) to a
//! reset socket kills its child with SIGPIPE.

#![cfg(unix)] // SIGPIPE is a Unix signal; Windows has none (docs/platforms.md)

mod net_support;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use loophole_ipc::message::{Stream, Subscribe};
use net_support::*;

const CHILD_ENV: &str = "LOOPHOLE_SIGPIPE_CHILD";

fn run_child(test: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .status()
        .unwrap()
}

fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(test)
}

fn sigpipe_default() {
    // SAFETY: setting a signal disposition to the default action; no handler is installed.
    let r = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(r, libc::SIG_ERR);
}

fn set_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and a correctly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn server_writes_to_vanished_peers_without_sigpipe() {
    if !is_child("child_server_writes_to_vanished_peers") {
        let status = run_child("child_server_writes_to_vanished_peers");
        assert_eq!(status.signal(), None, "child killed by signal: {status:?}");
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn child_server_writes_to_vanished_peers() {
    if !is_child("child_server_writes_to_vanished_peers") {
        return;
    }
    sigpipe_default();
    let mut rt = loophole_ipc::rt::RtConfig::default();
    rt.meter_channels = 64;
    let e = Engine::start_with(
        fast().socket_send_buffer(Some(4096)).tx_buffer(64 * 1024),
        rt,
    );
    for round in 0..8u32 {
        let mut c = e.client();
        set_rcvbuf(c.stream(), 4096);
        let mut other = Vec::new();
        for stream in [Stream::Meters, Stream::Transport, Stream::Health] {
            c.request(
                &Subscribe {
                    stream,
                    rate_hz: 120,
                },
                &mut other,
            )
            .unwrap();
        }
        // Let the kernel buffers and the engine's transmit buffer fill while we do not read.
        std::thread::sleep(Duration::from_millis(400));
        if round % 2 == 0 {
            // Abortive close: RST while the engine still has bytes to send.
            set_linger_zero(c.stream());
        } else {
            // Half-close first (FIN): the engine reads EOF, stops reading and keeps flushing
            // (its socket is in CLOSE_WAIT). Then reset: a RST in CLOSE_WAIT makes the engine's
            // next send fail with EPIPE — the case that raises SIGPIPE without MSG_NOSIGNAL.
            c.stream().shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            set_linger_zero(c.stream());
        }
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still alive, and still serving.
    let mut c = e.client();
    assert!(c.ping().is_ok());
}

#[test]
fn negative_control_raw_write_is_killed_by_sigpipe() {
    if !is_child("child_raw_write") {
        let status = run_child("child_raw_write");
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
    }
}

#[test]
fn child_raw_write() {
    if !is_child("child_raw_write") {
        return;
    }
    use std::os::fd::AsRawFd;
    sigpipe_default();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().unwrap();
    set_linger_zero(&peer);
    drop(peer);
    std::thread::sleep(Duration::from_millis(50));
    let _ = s.write(b"x"); // consumes the reset error (ECONNRESET)
    for _ in 0..100 {
        // SAFETY: a valid fd and a 1-byte buffer.
        unsafe { libc::write(s.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        std::thread::sleep(Duration::from_millis(1));
    }
    // Not reached when SIGPIPE kills the process.
}

fn set_rcvbuf(s: &std::net::TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: valid socket and a correctly sized c_int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}
