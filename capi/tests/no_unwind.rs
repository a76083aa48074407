//! No unwinding crosses the C ABI: a panic inside an export returns `LOOPHOLE_ERR_PANIC`,
//! poisons the handle, and every later call on it is refused (`LOOPHOLE_ERR_POISONED` or a
//! neutral no-op) while the other handles keep working. The negative control is the same call
//! without the armed panic: it succeeds.

use loophole_ipc_capi::*;
use std::ffi::c_void;
use std::ptr;

unsafe extern "C" fn apply(_user: *mut c_void, _cmd: *const LoopholeCommand) -> LoopholeOutcome {
    LoopholeOutcome {
        kind: LOOPHOLE_OUTCOME_APPLIED,
        value: 0,
    }
}

struct Handles {
    server: *mut LoopholeServer,
    audio: *mut LoopholeAudio,
    control: *mut LoopholeControl,
}

fn create() -> Handles {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    // SAFETY: writable config; the out pointers are valid locals.
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let cfg = cfg.assume_init();
        let mut h = Handles {
            server: ptr::null_mut(),
            audio: ptr::null_mut(),
            control: ptr::null_mut(),
        };
        let rc = loophole_create(
            &cfg,
            &mut h.server,
            &mut h.audio,
            &mut h.control,
            ptr::null_mut(),
            0,
        );
        assert_eq!(rc, LOOPHOLE_OK);
        h
    }
}

fn stats(audio: *mut LoopholeAudio) -> (i32, LoopholeAudioStats) {
    let mut st = LoopholeAudioStats {
        struct_size: size_of::<LoopholeAudioStats>() as u32,
        ..Default::default()
    };
    // SAFETY: live handle, writable stats.
    let rc = unsafe { loophole_audio_stats(audio, &mut st) };
    (rc, st)
}

#[test]
fn a_panic_in_drain_poisons_the_audio_handle_and_does_not_unwind() {
    let h = create();
    // SAFETY: live handles used from this thread only; freed once at the end.
    unsafe {
        // Negative control: without the armed panic the same calls work.
        loophole_audio_begin(h.audio, loophole_now_ns(), 64);
        assert_eq!(
            loophole_audio_drain(h.audio, Some(apply), ptr::null_mut()),
            0
        );
        loophole_audio_end(h.audio, loophole_now_ns());
        assert_eq!(stats(h.audio).0, LOOPHOLE_OK);
        assert_eq!(stats(h.audio).1.sample_clock, 64);

        testing::arm_panic(h.audio);
        loophole_audio_begin(h.audio, loophole_now_ns(), 64);
        // The panic is caught inside the export: the call returns (0 commands) instead of
        // unwinding into this (C-like) caller or aborting the process.
        assert_eq!(
            loophole_audio_drain(h.audio, Some(apply), ptr::null_mut()),
            0
        );
        assert_eq!(stats(h.audio).0, LOOPHOLE_ERR_POISONED);
        // Every later audio call is a no-op on the poisoned handle.
        loophole_audio_begin(h.audio, loophole_now_ns(), 64);
        loophole_audio_end(h.audio, loophole_now_ns());
        assert_eq!(stats(h.audio).0, LOOPHOLE_ERR_POISONED);
        // The other handles are unaffected.
        assert!(loophole_server_is_running(h.server));
        assert_eq!(loophole_control_reply(h.control, 0, 0), LOOPHOLE_OK);
        loophole_audio_free(h.audio); // freeing a poisoned handle works
        loophole_control_free(h.control);
        loophole_server_free(h.server);
    }
}

#[test]
fn a_panic_in_control_recv_returns_the_panic_status_then_poisoned() {
    let h = create();
    let mut req = std::mem::MaybeUninit::<LoopholeControlRequest>::zeroed();
    // SAFETY: live handles; `req` is a zeroed, writable request.
    unsafe {
        (*req.as_mut_ptr()).struct_size = size_of::<LoopholeControlRequest>() as u32;
        assert_eq!(
            loophole_control_recv(h.control, 0, req.as_mut_ptr()),
            LOOPHOLE_ERR_TIMEOUT
        );
        testing::arm_control_panic(h.control);
        assert_eq!(
            loophole_control_recv(h.control, 0, req.as_mut_ptr()),
            LOOPHOLE_ERR_PANIC
        );
        assert_eq!(
            loophole_control_recv(h.control, 0, req.as_mut_ptr()),
            LOOPHOLE_ERR_POISONED
        );
        assert_eq!(
            loophole_control_reply(h.control, 1, 0),
            LOOPHOLE_ERR_POISONED
        );
        assert!(!loophole_control_is_orphaned(h.control));
        loophole_server_free(h.server);
        loophole_control_free(h.control);
        loophole_audio_free(h.audio);
    }
}

#[test]
fn a_panic_in_analysis_requests_poisons_only_the_analysis_handle() {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    // SAFETY: writable config and valid out pointers; handles used from this thread only and
    // freed once.
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let mut cfg = cfg.assume_init();
        cfg.analysis_taps = 1;
        let (mut s, mut a, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        let rc = loophole_create(&cfg, &mut s, &mut a, &mut c, ptr::null_mut(), 0);
        assert_eq!(rc, LOOPHOLE_OK);
        let mut an = ptr::null_mut();
        assert_eq!(loophole_server_take_analysis(s, &mut an), LOOPHOLE_OK);
        let mut reqs = [LoopholeAnalysisRequest::default(); 8];
        let mut n = 0usize;
        let size = size_of::<LoopholeAnalysisRequest>();
        // Negative control: without the armed panic the same call works.
        assert_eq!(
            loophole_analysis_requests(an, reqs.as_mut_ptr(), 8, size, &mut n),
            LOOPHOLE_OK
        );
        testing::arm_analysis_panic(an);
        assert_eq!(
            loophole_analysis_requests(an, reqs.as_mut_ptr(), 8, size, &mut n),
            LOOPHOLE_ERR_PANIC
        );
        assert_eq!(
            loophole_analysis_requests(an, reqs.as_mut_ptr(), 8, size, &mut n),
            LOOPHOLE_ERR_POISONED
        );
        let v = [0.0f32; 16];
        assert_eq!(
            loophole_analysis_submit(an, &reqs[0], 0, 0, 0, v.as_ptr(), 16),
            LOOPHOLE_ERR_POISONED
        );
        assert!(!loophole_analysis_is_connected(an));
        // The audio side still publishes to the tap; the server still runs.
        assert_eq!(
            loophole_audio_publish_tap(a, 0, v.as_ptr(), 16),
            LOOPHOLE_OK
        );
        assert!(loophole_server_is_running(s));
        loophole_analysis_free(an);
        loophole_server_free(s);
        loophole_audio_free(a);
        loophole_control_free(c);
    }
}
