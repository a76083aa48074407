//! Stopping: the shutdown flush, and the watch for a vanished supervisor (orphan).

use std::sync::atomic::Ordering;

use super::conn::read_in;
use super::{ns, Worker};
use crate::control::{ControlOp, ControlRequest, ControlTicket, SendFail};
use crate::net::sys as timer;

impl Worker {
    /// Starts stopping when asked: no more accepting or reading. Every session is told at once;
    /// it answers the frames it had received `shutting_down` and says `goodbye` once the answers
    /// it is owed have been queued (or half the flush time has passed), so `goodbye` is last.
    pub(super) fn check_stop(&mut self, now: u64) {
        if !self.stopping && self.hub.status.stop.load(Ordering::SeqCst) {
            self.stopping = true;
            self.stop_started = now;
            self.stop_deadline = now.saturating_add(ns(self.cfg.flush_timeout));
            if let Some(mut l) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
            self.service(now);
            self.read_before_shutdown();
        }
        if !self.stopping {
            return;
        }
        let mut changed = false;
        for c in self.slots.iter_mut().flatten() {
            if !c.shut {
                c.shut = true;
                c.session.shutdown(now);
                changed = true;
            }
        }
        if changed {
            self.service(now);
        }
    }

    /// Reads, once, what each connection's socket holds when the stop begins (to
    /// `WouldBlock`, or as much as the session has room for): complete commands the client had
    /// sent are then answered `shutting_down` by the session's shutdown, instead of being left
    /// unanswered in the kernel buffer (session.md §7). Nothing is read after this.
    fn read_before_shutdown(&mut self) {
        for c in self.slots.iter_mut().flatten() {
            if !c.shut && !c.dead {
                c.readable = true; // bytes may have arrived since the last event was handled
                read_in(c);
            }
        }
    }

    pub(super) fn watch_orphan(&mut self, now: u64) {
        let Some(pid) = self
            .cfg
            .supervisor_pid
            .or(self.cfg.watch_parent.then_some(0))
        else {
            return;
        };
        if now >= self.next_orphan_check {
            self.next_orphan_check = now.saturating_add(ns(self.cfg.orphan_check));
            let gone = (pid != 0 && !timer::process_alive(pid))
                || (self.cfg.watch_parent && timer::parent_pid() != self.initial_ppid);
            if gone && self.supervisor_gone_at.is_none() {
                self.supervisor_gone_at = Some(now);
            }
        }
        let Some(gone_at) = self.supervisor_gone_at else {
            return;
        };
        let since = gone_at.max(self.hub.last_controller_ns);
        let grace_over = now >= since.saturating_add(ns(self.cfg.orphan_grace));
        if !self.orphan_reported && self.hub.controller.is_none() && grace_over {
            self.orphan_reported = true;
            self.orphaned.store(true, Ordering::Relaxed);
        }
        if self.orphan_reported && !self.orphan_delivered {
            let req = ControlRequest {
                id: 0,
                op: ControlOp::Orphaned,
                ticket: ControlTicket::NONE,
            };
            // Full: try again at the next check. Unavailable: the flag is all we can do.
            self.orphan_delivered = self.hub.control.try_send(req) != Err(SendFail::Full);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::super::tests::worker;
    use super::*;
    use crate::clock;
    use crate::config::ServerConfig;
    use crate::frame::FrameDecoder;
    use crate::message::{self, ServerMessage};

    fn send<M: message::Message>(s: &mut std::net::TcpStream, id: u32, m: &M) {
        let mut buf = [0u8; 512];
        let n = message::encode_frame(Some(id), m, &mut buf, u32::MAX).unwrap();
        s.write_all(&buf[..n]).unwrap();
    }

    /// Issue 9 review: bytes in the socket's kernel buffer when the stop begins were never
    /// read, so the complete commands in them got no answer (only `goodbye`). They are read
    /// once at the stop and answered `shutting_down` before `goodbye`. Fails on the old code:
    /// the client receives `welcome` and `goodbye`, no answer to id 7.
    #[test]
    fn commands_in_the_kernel_buffer_at_the_stop_are_answered() {
        let (mut w, addr, _control, _audio) = worker(ServerConfig::default());
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .write_all(&super::super::tests::hello_bytes())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.accept_more = true;
        w.accept_all(); // read at once: OPEN
        assert!(w.hub.controller.is_some());
        send(&mut client, 7, &message::Play {});
        std::thread::sleep(std::time::Duration::from_millis(20)); // in the kernel buffer, unread
        w.hub.status.stop.store(true, Ordering::SeqCst);
        let now = clock::now_ns();
        w.check_stop(now);
        for _ in 0..10 {
            w.service(clock::now_ns());
        }
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        let mut dec = FrameDecoder::new(vec![0u8; 8 + 65_536], 65_536).unwrap();
        let mut got = Vec::new();
        while !got
            .iter()
            .any(|(_, m)| matches!(m, ServerMessage::Goodbye(_)))
        {
            let n = client.read(dec.spare()).unwrap();
            assert!(n > 0, "closed before goodbye: {got:?}");
            dec.commit(n);
            while let Some(f) = dec.next_frame() {
                got.push(ServerMessage::decode(f.unwrap().payload).unwrap());
            }
        }
        let answered = got.iter().position(|(r, _)| *r == Some(7));
        let goodbye = got.len() - 1;
        assert!(
            answered.is_some_and(|i| i < goodbye),
            "id 7 answered before goodbye: {got:?}"
        );
    }
}
