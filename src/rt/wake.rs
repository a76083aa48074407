//! `rt-wake`: the audio side's waker, replaceable by each new server on the same bridge.
//!
//! The waker belongs to the network thread's event loop (`mio::Poll`), so a server started on a
//! bridge after a restart ([`ServerHandle::shutdown`](crate::net::ServerHandle::shutdown) gives
//! the [`NetEndpoint`](super::NetEndpoint) back) must give the audio side its own waker, or the
//! wakes go to a dead event loop. The hand-over is two single-slot `rtrb` queues, so the audio
//! side neither locks nor frees:
//!
//! * `incoming` (network → audio) carries the new waker. The audio side takes it at the start
//!   of a callback, only when `retired` has room for the one it replaces.
//! * `retired` (audio → network) carries the replaced waker back, so its last reference (an
//!   eventfd `close(2)` and a free) is dropped on the network thread, never in the callback.
//!
//! Cost on the audio side: one atomic load per callback while nothing is handed over.

use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::Arc;

type Waker = Arc<mio::Waker>;

/// The audio side's end: the waker in use and the two queues.
#[derive(Debug)]
pub(crate) struct AudioWake {
    current: Option<Waker>,
    incoming: Consumer<Waker>,
    retired: Producer<Waker>,
}

/// The network side's end.
#[derive(Debug)]
pub(crate) struct NetWake {
    outgoing: Producer<Waker>,
    retired: Consumer<Waker>,
    /// A waker not yet handed over (the slot was full: the audio side has not run since).
    pending: Option<Waker>,
    /// Whether this bridge wakes at all (it was built with a waker, or one was installed).
    wanted: bool,
}

/// Allocates the two queues. `initial` is `RtConfig::waker`.
pub(crate) fn wake_route(initial: Option<Waker>) -> (AudioWake, NetWake) {
    let (outgoing, incoming) = RingBuffer::new(1);
    let (retired_tx, retired_rx) = RingBuffer::new(1);
    let wanted = initial.is_some();
    (
        AudioWake {
            current: initial,
            incoming,
            retired: retired_tx,
        },
        NetWake {
            outgoing,
            retired: retired_rx,
            pending: None,
            wanted,
        },
    )
}

impl AudioWake {
    /// Audio thread, start of a callback: switches to a newly installed waker if there is one
    /// and the replaced one can be handed back. Wait-free; never frees.
    #[inline]
    pub(crate) fn adopt(&mut self) {
        if self.incoming.is_empty() || self.retired.slots() == 0 {
            return;
        }
        let Ok(new) = self.incoming.pop() else { return };
        if let Some(old) = self.current.replace(new) {
            // Cannot fail: this thread is the only producer and saw a free slot. Should it
            // fail anyway, leak rather than free on the audio thread.
            if let Err(rtrb::PushError::Full(old)) = self.retired.push(old) {
                std::mem::forget(old);
            }
        }
    }

    /// Audio thread, end of a callback that answered: one `write(2)` when a waker is set.
    #[inline]
    pub(crate) fn wake(&self) -> Option<std::io::Result<()>> {
        self.current.as_ref().map(|w| w.wake())
    }
}

impl NetWake {
    /// Network thread: gives the audio side `waker` (taken at its next callback). Drops the
    /// wakers the audio side handed back. Allocates nothing; never blocks.
    pub(crate) fn install(&mut self, waker: Waker) {
        self.wanted = true;
        self.pending = Some(waker);
        self.flush();
    }

    /// Network thread: hands a pending waker over if the slot is free, and drops the retired.
    #[inline]
    pub(crate) fn flush(&mut self) {
        while self.retired.pop().is_ok() {}
        if let Some(w) = self.pending.take() {
            if self.outgoing.is_full() {
                // The audio side has not taken the previous one: replace it on the next flush.
                self.pending = Some(w);
            } else {
                let _ = self.outgoing.push(w);
            }
        }
    }

    /// Whether there is something to flush.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether this bridge wakes the network thread (built with a waker, or one installed).
    pub(crate) fn wanted(&self) -> bool {
        self.wanted
    }
}
