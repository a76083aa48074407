//! Stopping: the shutdown flush, and the watch for a vanished supervisor (orphan).

use std::sync::atomic::Ordering;

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
