//! The control route: graph edits and `engine.shutdown`, carried out by a non-real-time thread
//! the embedding engine provides.
//!
//! [`ServerBuilder::spawn`](crate::net::ServerBuilder::spawn) returns a [`ControlEndpoint`] next to
//! the server handle. The engine's control thread loops on
//! [`recv_timeout`](ControlEndpoint::recv_timeout) and answers each request exactly once with
//! [`reply`](ControlEndpoint::reply), passing the request's [`ticket`](ControlRequest::ticket):
//!
//! ```no_run
//! use std::time::Duration;
//! use loophole_ipc::control::{ControlError, ControlOp};
//! # let (_audio, net) = loophole_ipc::rt::bridge(&Default::default());
//! # let (_server, control) = loophole_ipc::net::Server::builder().spawn(net).unwrap();
//! while let Ok(req) = control.recv_timeout(Duration::from_secs(1)) {
//!     let result = match req.op {
//!         ControlOp::Orphaned => break, // shut the engine down
//!         _ => Err(ControlError::Unsupported),
//!     };
//!     control.reply(req.ticket, result)?;
//! }
//! # Ok::<(), loophole_ipc::control::ServerGone>(())
//! ```
//!
//! Replies wake the network thread with a `mio::Waker` (an eventfd write: fine here, this thread
//! is not real-time).
//!
//! If the endpoint is dropped (the engine does not take the control route, or its control thread
//! ends), control commands are answered `control_unavailable`, including those queued or being
//! handled at that moment that had no reply yet. When the request queue is full the network
//! thread stops reading the client (TCP back-pressure); nothing is dropped.
//!
//! Both queues are bounded `std::sync::mpsc::sync_channel`s allocated once at spawn: sending and
//! receiving a request or reply does not allocate.

use core::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::message::{AddNode, Edge};

/// A request for the engine's control thread. Only the server makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlRequest {
    /// The client's command id, for the engine's logs. Not unique (clients choose ids, several
    /// clients may use the same one); `0` and meaningless for [`ControlOp::Orphaned`].
    pub id: u32,
    /// What to do.
    pub op: ControlOp,
    /// Pass it to [`ControlEndpoint::reply`]: it names this request and no other.
    pub ticket: ControlTicket,
}

/// Names one [`ControlRequest`] for [`ControlEndpoint::reply`]. `Copy`, so it survives moving
/// `op` out of the request. Only the server makes tickets: each request gets its own, and the
/// one of [`ControlOp::Orphaned`] matches nothing (a reply with it is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlTicket(u64);

impl ControlTicket {
    /// The ticket of notices that take no reply.
    pub(crate) const NONE: Self = Self(0);

    /// The ticket of the `seq`-th request (`seq >= 1`).
    pub(crate) const fn new(seq: u64) -> Self {
        Self(seq)
    }
}

/// The operations of the control route.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ControlOp {
    /// `graph.add_node`.
    AddNode(AddNode),
    /// `graph.remove_node`.
    RemoveNode {
        /// Node id.
        node: u32,
    },
    /// `graph.connect`.
    Connect(Edge),
    /// `graph.disconnect`.
    Disconnect(Edge),
    /// `engine.shutdown`: reply, then stop the server with
    /// [`ServerHandle::shutdown`](crate::net::ServerHandle::shutdown) and exit.
    Shutdown,
    /// Not from a client: the supervisor process is gone and no client reconnected within the
    /// grace period. The engine should shut down. No reply is expected (one is ignored).
    Orphaned,
}

/// Why the control thread refused a request (becomes the `error` answer's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// No node with that id (`unknown_node`).
    UnknownNode,
    /// A node with that id exists (`node_exists`).
    NodeExists,
    /// The node kind is not known (`unknown_kind`).
    UnknownKind,
    /// The engine does not support this (`unsupported`).
    Unsupported,
    /// A value outside what the target accepts, e.g. a port the node does not have
    /// (`out_of_range`).
    OutOfRange,
    /// Anything else went wrong (`internal`).
    Failed,
}

impl ControlError {
    /// The wire error code.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::UnknownNode => ErrorCode::UnknownNode,
            Self::NodeExists => ErrorCode::NodeExists,
            Self::UnknownKind => ErrorCode::UnknownKind,
            Self::Unsupported => ErrorCode::Unsupported,
            Self::OutOfRange => ErrorCode::OutOfRange,
            Self::Failed => ErrorCode::Internal,
        }
    }

    /// The human-readable text sent with it.
    pub const fn detail(self) -> &'static str {
        match self {
            Self::UnknownNode => "no node with that id",
            Self::NodeExists => "a node with that id exists already",
            Self::UnknownKind => "unknown node kind",
            Self::Unsupported => "not supported by this engine",
            Self::OutOfRange => "value outside what the target accepts (e.g. no such port)",
            Self::Failed => "the control thread failed to apply the command",
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl core::error::Error for ControlError {}

/// The network thread is gone; the reply could not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerGone;

impl fmt::Display for ServerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the network thread has stopped")
    }
}

impl core::error::Error for ServerGone {}

/// One control reply travelling back to the network thread.
pub(crate) type ControlReply = (ControlTicket, Result<(), ControlError>);

/// The engine's end of the control route. `Send`; owned by the engine's control thread.
#[derive(Debug)]
pub struct ControlEndpoint {
    requests: Receiver<ControlRequest>,
    replies: SyncSender<ControlReply>,
    waker: Arc<mio::Waker>,
    orphaned: Arc<AtomicBool>,
    /// Set by `Drop` (after every reply was sent), then the network thread is woken.
    dropped: Arc<AtomicBool>,
}

impl Drop for ControlEndpoint {
    /// Tells the network thread that no reply will come: it answers what is still owed
    /// `control_unavailable`. One eventfd write.
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl ControlEndpoint {
    /// Waits up to `timeout` for the next request. Blocks. `Disconnected` once the server has
    /// stopped and every queued request was taken.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ControlRequest, RecvTimeoutError> {
        self.requests.recv_timeout(timeout)
    }

    /// Takes the next request if one is queued. Never blocks.
    pub fn try_recv(&self) -> Result<ControlRequest, TryRecvError> {
        self.requests.try_recv()
    }

    /// Answers the request whose [`ticket`](ControlRequest::ticket) this is (exactly once per
    /// request; answer in the order received). A reply to [`ControlOp::Orphaned`] or a second
    /// reply to the same request is ignored.
    ///
    /// May block briefly if the reply queue is full (the network thread drains it whenever it
    /// wakes). Wakes the network thread (one eventfd write).
    pub fn reply(
        &self,
        ticket: ControlTicket,
        result: Result<(), ControlError>,
    ) -> Result<(), ServerGone> {
        self.replies
            .send((ticket, result))
            .map_err(|_| ServerGone)?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// Whether the server has reported the engine orphaned (see [`ControlOp::Orphaned`]).
    pub fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::Relaxed)
    }
}

/// Why a request could not be handed to the control thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFail {
    Full,
    Unavailable,
}

/// What [`ControlLink::try_recv`] found.
#[derive(Debug)]
pub(crate) enum Received {
    Reply(ControlReply),
    /// Nothing now; more may come.
    Empty,
    /// The endpoint is dropped and every reply it sent was taken: nothing more will come.
    Gone,
}

/// The network thread's end.
#[derive(Debug)]
pub(crate) struct ControlLink {
    requests: SyncSender<ControlRequest>,
    replies: Receiver<ControlReply>,
    dropped: Arc<AtomicBool>,
}

impl ControlLink {
    pub(crate) fn try_send(&self, req: ControlRequest) -> Result<(), SendFail> {
        self.requests.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => SendFail::Full,
            TrySendError::Disconnected(_) => SendFail::Unavailable,
        })
    }

    pub(crate) fn try_recv(&self) -> Received {
        match self.replies.try_recv() {
            Ok(r) => Received::Reply(r),
            Err(TryRecvError::Disconnected) => Received::Gone,
            // The flag is stored after the endpoint's last reply: seen set, one more look finds
            // any reply sent before it.
            Err(TryRecvError::Empty) if self.dropped.load(Ordering::Acquire) => {
                match self.replies.try_recv() {
                    Ok(r) => Received::Reply(r),
                    Err(_) => Received::Gone,
                }
            }
            Err(TryRecvError::Empty) => Received::Empty,
        }
    }
}

/// Allocates both queues (the only allocation of the control route).
pub(crate) fn control_route(
    capacity: usize,
    waker: Arc<mio::Waker>,
    orphaned: Arc<AtomicBool>,
) -> (ControlLink, ControlEndpoint) {
    let (req_tx, req_rx) = std::sync::mpsc::sync_channel(capacity.max(1));
    // Room for every request queued plus every one being handled and a few more: a reply
    // never waits for long.
    let (rep_tx, rep_rx) = std::sync::mpsc::sync_channel(capacity.max(1) * 2 + 8);
    let dropped = Arc::new(AtomicBool::new(false));
    (
        ControlLink {
            requests: req_tx,
            replies: rep_rx,
            dropped: Arc::clone(&dropped),
        },
        ControlEndpoint {
            requests: req_rx,
            replies: rep_tx,
            waker,
            orphaned,
            dropped,
        },
    )
}
