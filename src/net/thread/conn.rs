//! One connection: its socket and session, reading, writing, servicing, closing.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;

use super::hub::Routes;
use super::telemetry::send_telemetry;
use super::{ns, Sess, Worker, ROUNDS};
use crate::clock;
use crate::net::framelog::LoggedStream;
use crate::session::SessionState;

/// One accepted socket and its session.
pub(super) struct Conn {
    pub(super) stream: LoggedStream,
    pub(super) session: Sess,
    pub(super) key: u64,
    pub(super) readable: bool,
    /// An event said the peer closed its side (or errored): read until end of stream.
    pub(super) read_closed: bool,
    pub(super) writable: bool,
    pub(super) closing_since: Option<u64>,
    pub(super) dead: bool,
    /// `Session::shutdown` was called (server stopping).
    pub(super) shut: bool,
    /// When it was accepted: the oldest connection not yet OPEN is evicted first.
    pub(super) accepted_at: u64,
    /// When the client last took bytes (or when it was accepted).
    pub(super) last_write: u64,
    /// Registered with the poll. A connection that is over after its first read at accept
    /// (refused, wrong preface) is closed without ever being registered.
    pub(super) registered: bool,
}

impl Conn {
    /// When a closing connection is closed regardless: `flush` after it began closing. A
    /// half-closed session that was OPEN and owes nothing more but bytes the client is still
    /// reading is kept while the client makes progress, up to `slow` without any (session.md
    /// §7: the wait for a slow reader after a half-close is bounded by the slow-consumer limit).
    pub(super) fn close_by(&self, since: u64, flush: u64, slow: u64) -> u64 {
        let by = since.saturating_add(flush);
        let s = &self.session;
        if s.is_eof() && s.was_open() && s.is_closed() && !s.tx_pending().is_empty() {
            return by.max(self.last_write.max(since).saturating_add(slow));
        }
        by
    }
}

impl Worker {
    pub(super) fn service_conn(&mut self, slot: usize, now: u64) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let mut routes = Routes {
            hub: &mut self.hub,
            key: c.key,
        };
        for _ in 0..ROUNDS {
            let mut progress = !self.stopping && read_in(c);
            c.session.poll(now, &mut routes);
            send_telemetry(c, routes.hub, now);
            progress |= write_out(c, now);
            if !progress || c.dead {
                break;
            }
        }
    }

    /// Closes a connection whose session is over once its bytes are out, or at once when the
    /// socket failed. `flush_timeout` after the session began closing it is closed regardless:
    /// that bounds both the wait for answers still owed after a `goodbye` (the session lingers
    /// in `Closing`) and the wait for the client to read; answers arriving later are discarded
    /// and counted. Exception ([`Conn::close_by`]): a half-closed session that owes nothing but
    /// bytes is kept while its client keeps reading (up to `slow_consumer_timeout` without
    /// progress).
    pub(super) fn reap(&mut self, slot: usize, now: u64) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        if !c.dead && c.session.state() < SessionState::Closing {
            return;
        }
        let since = *c.closing_since.get_or_insert(now);
        let done = c.session.is_closed() && c.session.tx_pending().is_empty();
        let by = c.close_by(
            since,
            ns(self.cfg.flush_timeout),
            ns(self.cfg.slow_consumer_timeout),
        );
        if c.dead || done || now >= by {
            self.remove(slot);
        }
    }

    pub(super) fn remove(&mut self, slot: usize) {
        let Some(mut c) = self.slots[slot].take() else {
            return;
        };
        if self.hub.controller == Some(c.key) {
            self.hub.controller = None;
            self.hub.last_controller_ns = clock::now_ns();
            self.hub
                .status
                .client_connected
                .store(false, Ordering::Relaxed);
        }
        if c.registered {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        // Dropping the stream closes it: a FIN after the bytes already written, like
        // `shutdown(Write)`, when nothing is left unread. When bytes may be unread, `close`
        // would send a reset instead, so the FIN goes first: the client reads what it was sent,
        // then the end of the stream. Bytes may be unread when `readable` (the session stopped
        // reading, or the socket was not drained) and whenever the socket is registered: its
        // `readable` may be stale (cleared after a short read, bytes arriving since). Only a
        // connection closed at its first read, never registered, is known to have nothing
        // unread; skipping the `shutdown` there saves a system call per refused connection
        // (docs/benchmarks.md, third session).
        if c.readable || c.registered {
            let _ = c.stream.shutdown(Shutdown::Write);
        }
        self.buffers.push(c.session.into_buffers());
        // Answers still owed to it are discarded when they arrive (its key no longer matches a
        // live connection).
    }
}

/// Reads what the session has room for; true when bytes arrived or the peer closed.
pub(super) fn read_in(c: &mut Conn) -> bool {
    let mut progress = false;
    while c.readable {
        let space = c.session.rx_space();
        let space_len = space.len();
        if space_len == 0 {
            break;
        }
        match c.stream.read(space) {
            Ok(0) => {
                c.session.rx_eof();
                c.readable = false;
                return true;
            }
            Ok(n) => {
                // A short read drained the socket: with edge-triggered readiness, new bytes (or
                // a FIN) arriving later raise a new event, so the read that would only return
                // `WouldBlock` is skipped. Not when the event also said the peer closed: then
                // read on to the end of the stream. Linux only: mio's contract elsewhere is to
                // read until `WouldBlock` (on Windows readiness is re-armed only by it).
                let drained = cfg!(target_os = "linux") && n < space_len && !c.read_closed;
                c.session.rx_commit(n);
                progress = true;
                if drained {
                    c.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.session.rx_eof();
                c.readable = false;
                c.dead = true;
                return true;
            }
        }
    }
    progress
}

/// Writes pending bytes until the socket would block; true when some were written.
pub(super) fn write_out(c: &mut Conn, now: u64) -> bool {
    let mut progress = false;
    while c.writable && !c.dead {
        let pending = c.session.tx_pending();
        if pending.is_empty() {
            break;
        }
        // std/mio send with MSG_NOSIGNAL on Linux (SO_NOSIGPIPE on macOS): a vanished peer is
        // an EPIPE error here, never a SIGPIPE.
        match c.stream.write(pending) {
            Ok(0) => c.dead = true,
            Ok(n) => {
                c.session.tx_consumed(n, now);
                c.last_write = now;
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => c.dead = true,
        }
    }
    progress
}
