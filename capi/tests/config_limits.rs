//! Queue capacities from C are bounded: a value no engine needs (a `-1` cast to `uint32_t`,
//! a misplaced field) is `LOOPHOLE_ERR_INVALID_ARGUMENT` naming the field, never an attempt
//! to allocate gigabytes that aborts the host process ("memory allocation failed" is an
//! abort, not a panic: `catch_unwind` cannot turn it into a status). Negative control: the
//! largest accepted value of each field starts a server.

use loophole_ipc_capi::*;
use std::ffi::CStr;
use std::ptr;

fn config() -> LoopholeConfig {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    // SAFETY: a writable config of this header's size.
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        cfg.assume_init()
    }
}

/// `loophole_create` on `cfg`: the status and the error detail; frees what it made.
fn create(cfg: &LoopholeConfig) -> (i32, String) {
    let (mut s, mut a, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: valid config and out pointers; `err` has 256 bytes.
    unsafe {
        let rc = loophole_create(cfg, &mut s, &mut a, &mut c, err.as_mut_ptr(), err.len());
        loophole_server_free(s);
        loophole_audio_free(a);
        loophole_control_free(c);
        let detail = CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned();
        (rc, detail)
    }
}

fn refused(field: &str, set: impl Fn(&mut LoopholeConfig, u32)) {
    let mut cfg = config();
    set(&mut cfg, u32::MAX);
    let (rc, detail) = create(&cfg);
    assert_eq!(
        rc, LOOPHOLE_ERR_INVALID_ARGUMENT,
        "{field} = u32::MAX: {detail}"
    );
    assert!(detail.contains(field), "the detail names {field}: {detail}");
}

#[test]
fn a_huge_command_capacity_is_refused_not_an_abort() {
    refused("command_capacity", |c, v| c.command_capacity = v);
}

#[test]
fn a_huge_reply_capacity_is_refused_not_an_abort() {
    refused("reply_capacity", |c, v| c.reply_capacity = v);
}

#[test]
fn a_huge_control_capacity_is_refused_not_an_abort() {
    refused("control_capacity", |c, v| c.control_capacity = v);
}

/// Negative control: the largest accepted value of each capacity (and 0 refused as before).
#[test]
fn the_largest_capacities_start_a_server() {
    let mut cfg = config();
    cfg.command_capacity = LOOPHOLE_MAX_QUEUE_CAPACITY;
    cfg.reply_capacity = LOOPHOLE_MAX_QUEUE_CAPACITY;
    cfg.control_capacity = LOOPHOLE_MAX_QUEUE_CAPACITY;
    let (rc, detail) = create(&cfg);
    assert_eq!(rc, LOOPHOLE_OK, "{detail}");
    cfg.command_capacity = LOOPHOLE_MAX_QUEUE_CAPACITY + 1;
    assert_eq!(create(&cfg).0, LOOPHOLE_ERR_INVALID_ARGUMENT);
    let mut cfg = config();
    cfg.control_capacity = 0;
    assert_eq!(create(&cfg).0, LOOPHOLE_ERR_INVALID_ARGUMENT);
}

/// A connection file that cannot be written: `LOOPHOLE_ERR_CANNOT_START`, and the detail names
/// the file (it named a port before). Control: the same config without the file starts.
#[test]
fn an_unwritable_connection_file_is_named() {
    let path = c"/nonexistent-loophole-dir/engine.json";
    let mut cfg = config();
    cfg.connection_file = path.as_ptr();
    let (rc, detail) = create(&cfg);
    assert_eq!(rc, LOOPHOLE_ERR_CANNOT_START, "{detail}");
    assert!(
        detail.contains("cannot write the connection file")
            && detail.contains("/nonexistent-loophole-dir/engine.json"),
        "{detail}"
    );
    cfg.connection_file = ptr::null();
    assert_eq!(create(&cfg).0, LOOPHOLE_OK);
}
