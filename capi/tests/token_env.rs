//! `token_from_env` with a `LOOPHOLE_SESSION_TOKEN` that is not UTF-8: `loophole_create` is
//! `LOOPHOLE_ERR_INVALID_ARGUMENT` naming the variable, never a server without a token (which
//! would accept every local client). Controls: a UTF-8 token starts a server, and so does the
//! unset variable (no token). One test in its own binary: it changes the environment, which no
//! other thread reads meanwhile.

#![cfg(unix)] // builds a non-UTF-8 value with OsStrExt::from_bytes

use loophole_ipc::client::{Client, ClientError, ClientOptions};
use loophole_ipc::error::ErrorCode;
use loophole_ipc_capi::*;
use std::ffi::{CStr, OsStr};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::ptr;
use std::time::{Duration, Instant};

/// `loophole_create` with `token_from_env` set: its status and error detail, and (when it
/// started) what a client without a token and one with `token` get from it. Frees what it made.
fn create_from_env(token: &str) -> (i32, String, Option<(bool, bool)>) {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    let (mut s, mut a, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: a writable config of this header's size, then valid out pointers and a 256-byte
    // error buffer; the server pointer is used only while it lives; what was made is freed
    // (NULL is accepted).
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let mut cfg = cfg.assume_init();
        cfg.token_from_env = 1;
        let rc = loophole_create(&cfg, &mut s, &mut a, &mut c, err.as_mut_ptr(), err.len());
        let admits = (rc == LOOPHOLE_OK).then(|| {
            let addr = SocketAddr::from(([127, 0, 0, 1], loophole_server_port(s)));
            (admitted(addr, None), admitted(addr, Some(token)))
        });
        loophole_server_free(s);
        loophole_audio_free(a);
        loophole_control_free(c);
        let detail = CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned();
        (rc, detail, admits)
    }
}

/// Whether a client presenting `token` gets a session (false: refused `bad_token`). The
/// previous client's session may still be closing for a moment: `session_busy` is retried.
fn admitted(addr: SocketAddr, token: Option<&str>) -> bool {
    let mut opts = ClientOptions::default();
    opts.token = token.map(str::to_owned);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(addr, &opts) {
            Ok(_) => return true,
            Err(ClientError::Refused(ErrorCode::BadToken)) => return false,
            Err(ClientError::Refused(ErrorCode::SessionBusy)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

#[test]
fn a_token_that_is_not_utf8_is_refused_not_ignored() {
    std::env::set_var("LOOPHOLE_SESSION_TOKEN", OsStr::from_bytes(b"\xff\xfe"));
    let (rc, detail, _) = create_from_env("");
    assert_eq!(rc, LOOPHOLE_ERR_INVALID_ARGUMENT, "{detail}");
    assert!(
        detail.contains("LOOPHOLE_SESSION_TOKEN is not valid UTF-8"),
        "{detail}"
    );

    // Controls: a UTF-8 token is required from clients; unset, anyone is admitted.
    std::env::set_var("LOOPHOLE_SESSION_TOKEN", "0123abcd");
    let (rc, detail, admits) = create_from_env("0123abcd");
    assert_eq!(rc, LOOPHOLE_OK, "{detail}");
    assert_eq!(admits, Some((false, true)), "without / with the token");
    std::env::remove_var("LOOPHOLE_SESSION_TOKEN");
    let (rc, _, admits) = create_from_env("");
    assert_eq!((rc, admits), (LOOPHOLE_OK, Some((true, true))));
}
