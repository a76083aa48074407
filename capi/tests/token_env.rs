//! `token_from_env` with a `LOOPHOLE_SESSION_TOKEN` that is not UTF-8: `loophole_create` is
//! `LOOPHOLE_ERR_INVALID_ARGUMENT` naming the variable, never a server without a token (which
//! would accept every local client). Controls: a UTF-8 token starts a server, and so does the
//! unset variable (no token). One test in its own binary: it changes the environment, which no
//! other thread reads meanwhile.

#![cfg(unix)] // builds a non-UTF-8 value with OsStrExt::from_bytes

use loophole_ipc_capi::*;
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt as _;
use std::ptr;

fn create_from_env() -> (i32, String) {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    let (mut s, mut a, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: a writable config of this header's size, then valid out pointers and a 256-byte
    // error buffer; what was made is freed (NULL is accepted).
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let mut cfg = cfg.assume_init();
        cfg.token_from_env = 1;
        let rc = loophole_create(&cfg, &mut s, &mut a, &mut c, err.as_mut_ptr(), err.len());
        loophole_server_free(s);
        loophole_audio_free(a);
        loophole_control_free(c);
        (
            rc,
            CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned(),
        )
    }
}

#[test]
fn a_token_that_is_not_utf8_is_refused_not_ignored() {
    std::env::set_var("LOOPHOLE_SESSION_TOKEN", OsStr::from_bytes(b"\xff\xfe"));
    let (rc, detail) = create_from_env();
    assert_eq!(rc, LOOPHOLE_ERR_INVALID_ARGUMENT, "{detail}");
    assert!(
        detail.contains("LOOPHOLE_SESSION_TOKEN is not valid UTF-8"),
        "{detail}"
    );

    std::env::set_var("LOOPHOLE_SESSION_TOKEN", "0123abcd");
    assert_eq!(create_from_env().0, LOOPHOLE_OK);
    std::env::remove_var("LOOPHOLE_SESSION_TOKEN");
    assert_eq!(create_from_env().0, LOOPHOLE_OK);
}
