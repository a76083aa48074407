//! A `graph.add_node` kind the C struct cannot carry is never handed to C truncated. JSON
//! allows `\u0000` inside a string; `LoopholeControlRequest::kind` is NUL-terminated, so
//! `"osc\u0000x"` would reach the engine as `"osc"`, and the engine would add a node of a kind
//! the client never named. The library answers such a request `unknown_kind` itself (no C
//! engine can have a kind containing NUL). Negative control: the same request with `"osc"`
//! reaches C whole and its reply reaches the client.

use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::message::{AddNode, ServerMessage};
use loophole_ipc_capi::*;
use std::ffi::CStr;
use std::net::SocketAddr;
use std::ptr;
use std::time::{Duration, Instant};

struct Engine {
    server: *mut LoopholeServer,
    audio: *mut LoopholeAudio,
    control: *mut LoopholeControl,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: handles from loophole_create, freed once.
        unsafe {
            loophole_server_free(self.server);
            loophole_audio_free(self.audio);
            loophole_control_free(self.control);
        }
    }
}

fn engine() -> Engine {
    let mut cfg = std::mem::MaybeUninit::<LoopholeConfig>::uninit();
    let mut e = Engine {
        server: ptr::null_mut(),
        audio: ptr::null_mut(),
        control: ptr::null_mut(),
    };
    // SAFETY: a writable config of this header's size; valid out pointers.
    unsafe {
        assert_eq!(
            loophole_config_init_sized(cfg.as_mut_ptr(), size_of::<LoopholeConfig>()),
            LOOPHOLE_OK
        );
        let cfg = cfg.assume_init();
        let rc = loophole_create(
            &cfg,
            &mut e.server,
            &mut e.audio,
            &mut e.control,
            ptr::null_mut(),
            0,
        );
        assert_eq!(rc, LOOPHOLE_OK);
    }
    e
}

/// The next control request C sees within `ms`, as (status, op, kind).
fn recv(e: &Engine, ms: u32) -> (i32, LoopholeControlRequest) {
    // SAFETY: a plain C struct of integers and a byte array: all zeros is a valid value.
    let mut req: LoopholeControlRequest = unsafe { std::mem::zeroed() };
    req.struct_size = size_of::<LoopholeControlRequest>() as u32;
    // SAFETY: live control handle used by this thread only; a whole request struct.
    let rc = unsafe { loophole_control_recv(e.control, ms, &mut req) };
    (rc, req)
}

fn kind_of(req: &LoopholeControlRequest) -> String {
    // SAFETY: `kind` is NUL-terminated within its array (the library writes at most 32 bytes).
    unsafe { CStr::from_ptr(req.kind.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn client(e: &Engine) -> Client {
    // SAFETY: live server handle.
    let port = unsafe { loophole_server_port(e.server) };
    Client::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &ClientOptions::default(),
    )
    .expect("handshake")
}

/// A started engine, a connected client, and the id of its `graph.add_node` of node 5 as `kind`.
fn add_node(kind: &str) -> (Engine, Client, u32) {
    let e = engine();
    let mut c = client(&e);
    let node = AddNode {
        node: 5,
        kind: kind.try_into().unwrap(),
    };
    let id = c.send(&node).expect("send");
    (e, c, id)
}

/// The answer to `id` (telemetry skipped).
fn answer(c: &mut Client, id: u32) -> ServerMessage {
    c.wait_for(id, &mut Vec::new()).expect("an answer")
}

#[test]
fn a_kind_with_a_nul_is_answered_unknown_kind_not_handed_to_c_truncated() {
    let (e, mut c, id) = add_node("osc\0x");
    // Serve the control route (as an engine's control thread would) until the client has its
    // answer: nothing may reach C meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let (rc, req) = recv(&e, 100);
        assert_eq!(
            rc,
            LOOPHOLE_ERR_TIMEOUT,
            "a request reached C: op {} kind {:?} (the client sent \"osc\\u0000x\")",
            req.op,
            kind_of(&req)
        );
        if let Some(r) = c
            .recv_timeout(Duration::from_millis(10))
            .expect("connected")
        {
            if r.reference == Some(id) {
                break r.message;
            }
        }
        assert!(Instant::now() < deadline, "no answer to the add_node");
    };
    match answer {
        ServerMessage::Error(err) => assert_eq!(err.code.as_str(), "unknown_kind"),
        other => panic!("expected error unknown_kind, got {other:?}"),
    }
}

#[test]
fn negative_control_a_plain_kind_reaches_c_whole() {
    let (e, mut c, id) = add_node("osc");
    let (rc, req) = recv(&e, 5000);
    assert_eq!(rc, LOOPHOLE_OK);
    assert_eq!(
        (req.op, req.node, kind_of(&req).as_str()),
        (LOOPHOLE_CONTROL_ADD_NODE, 5, "osc")
    );
    // SAFETY: live control handle.
    let rc = unsafe { loophole_control_reply(e.control, req.ticket, LOOPHOLE_CONTROL_RESULT_OK) };
    assert_eq!(rc, LOOPHOLE_OK);
    assert!(matches!(answer(&mut c, id), ServerMessage::Ack(_)));
}
