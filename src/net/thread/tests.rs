//! The unit tests' fixture: a worker on an ephemeral loopback port.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mio::net::TcpListener;
use mio::Poll;

use super::{Status, Worker, WAKER};
use crate::config::ServerConfig;
use crate::message;

/// A worker on an ephemeral loopback port with its control endpoint and bridge ends.
pub(super) fn worker(
    cfg: ServerConfig,
) -> (
    Worker,
    std::net::SocketAddr,
    crate::control::ControlEndpoint,
    crate::rt::AudioEndpoint,
) {
    let (audio, net) = crate::rt::bridge(&crate::rt::RtConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let poll = Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
    let orphaned = Arc::new(AtomicBool::new(false));
    let (link, endpoint) = crate::control::control_route(4, waker, Arc::clone(&orphaned));
    let status = Arc::new(Status::default());
    let w = Worker::new(cfg, poll, listener, net, link, status, orphaned).unwrap();
    (w, addr, endpoint, audio)
}

/// Preface + `hello` (id 1), as one client write.
pub(super) fn hello_bytes() -> Vec<u8> {
    let hello = message::Hello {
        protocol: message::PROTOCOL_VERSION,
        client: heapless::String::try_from("test").unwrap(),
        token: None,
        attachments: false,
    };
    let mut buf = [0u8; 512];
    let n = message::encode_frame(Some(1), &hello, &mut buf, u32::MAX).unwrap();
    let mut out = crate::frame::PREFACE.to_vec();
    out.extend_from_slice(&buf[..n]);
    out
}
