//! Routing answers: from the audio and control threads' replies to their sessions, oldest
//! first, with one holding cell for an answer whose session has no room.

use std::sync::atomic::Ordering;

use super::conn::Conn;
use super::hub::{Hub, AUDIO_GONE};
use super::{bump, Worker};
use crate::control::Received;
use crate::rt::RtReply;
use crate::session::Answer;

/// Replies taken from the audio queue per pass.
const REPLY_BUDGET: usize = 1024;

impl Worker {
    fn conn_by_key(slots: &mut [Option<Conn>], key: u64) -> Option<&mut Conn> {
        let slot = (key & 0xffff_ffff) as usize;
        slots
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.key == key && !c.dead)
    }

    /// Queues an answer for its owner; a gone owner's answer is discarded (and counted). When
    /// the owner has no room, the answer goes to the holding cell and `false` is returned: stop
    /// taking answers until it is delivered.
    fn offer(slots: &mut [Option<Conn>], hub: &mut Hub, key: u64, id: u32, a: Answer) -> bool {
        let Some(c) = Self::conn_by_key(slots, key) else {
            bump(&hub.status.answers_discarded);
            return true;
        };
        match Self::deliver(c, hub, id, a) {
            Ok(()) => true,
            Err(a) => {
                bump(&hub.status.answers_held);
                hub.held = Some((key, id, a));
                false
            }
        }
    }

    /// Gives `a` to its session; one the session discarded (it had sent its `goodbye`: never
    /// sent) is counted in `answers_discarded`. `Err` gives the answer back: no room.
    fn deliver(c: &mut Conn, hub: &Hub, id: u32, a: Answer) -> Result<(), Answer> {
        let discarded = c.session.answers_discarded();
        c.session.answer(id, a)?;
        if c.session.answers_discarded() > discarded {
            bump(&hub.status.answers_discarded);
        }
        Ok(())
    }

    /// Moves answers from the audio and control threads into their sessions, oldest first,
    /// stopping at the first one that does not fit (kept in the holding cell).
    pub(super) fn pump(&mut self) {
        let hub = &mut self.hub;
        let slots = &mut self.slots;
        if let Some((k, id, a)) = hub.held.take() {
            let Some(c) = Self::conn_by_key(slots, k) else {
                bump(&hub.status.answers_discarded);
                return self.pump();
            };
            if let Err(a) = Self::deliver(c, hub, id, a) {
                hub.held = Some((k, id, a)); // still no room; not counted again
                return;
            }
        }
        while let Some((k, id, a)) = hub.immediate.pop_front() {
            if !Self::offer(slots, hub, k, id, a) {
                return;
            }
        }
        loop {
            let (ticket, result) = match hub.control.try_recv() {
                Received::Reply(r) => r,
                Received::Empty => break,
                Received::Gone => {
                    if !Self::answer_control_gone(slots, hub) {
                        return;
                    }
                    break;
                }
            };
            let Some(i) = hub.control_owners.iter().position(|o| o.2 == ticket) else {
                continue; // a reply to nothing owed (`Orphaned`, a second reply): ignored
            };
            let Some((k, id, _)) = hub.control_owners.remove(i) else {
                continue;
            };
            let a = match result {
                Ok(()) => Answer::Ack { sample: None },
                Err(e) => Answer::Error {
                    code: e.code(),
                    detail: e.detail(),
                },
            };
            if !Self::offer(slots, hub, k, id, a) {
                return;
            }
        }
        Self::pump_rt(slots, hub);
    }

    /// Takes the audio thread's replies (up to [`REPLY_BUDGET`]). Once its endpoint is gone and
    /// every reply it queued is taken, answers what it still owed `audio_unavailable`. `false`
    /// when an answer went to the holding cell.
    pub(super) fn pump_rt(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        // Read before draining: the audio side pushes nothing after it is dropped, so once the
        // queue is empty below, no reply is still to come.
        let gone = hub.audio_gone || hub.net.is_audio_gone();
        if gone && !hub.audio_gone {
            // Pairs with the release of the endpoint's drop: every reply it pushed is visible.
            std::sync::atomic::fence(Ordering::Acquire);
            hub.audio_gone = true;
        }
        for _ in 0..REPLY_BUDGET {
            let Some(reply) = hub.net.pop_reply() else {
                return !gone || Self::answer_audio_gone(slots, hub);
            };
            let (Some(id), Some(mut a)) = (reply.answers(), answer_of(reply)) else {
                if let RtReply::Transport(t) = reply {
                    hub.transport = t;
                }
                continue;
            };
            let Some((k, _, t)) = hub.rt_owners.pop_front() else {
                continue; // an answer nobody is owed: cannot happen with a well-behaved bridge
            };
            if let Answer::Pong { t_client_us, .. } = &mut a {
                *t_client_us = t;
            }
            if !Self::offer(slots, hub, k, id, a) {
                return false;
            }
        }
        true
    }

    /// Answers every control command still owed once the control endpoint is dropped.
    fn answer_control_gone(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        while let Some((k, id, _)) = hub.control_owners.pop_front() {
            let a = Answer::Error {
                code: crate::ErrorCode::ControlUnavailable,
                detail: "this engine has no control handler",
            };
            if !Self::offer(slots, hub, k, id, a) {
                return false;
            }
        }
        true
    }

    /// Answers every command the (dropped) audio thread still owed.
    fn answer_audio_gone(slots: &mut [Option<Conn>], hub: &mut Hub) -> bool {
        while let Some((k, id, _)) = hub.rt_owners.pop_front() {
            if !Self::offer(slots, hub, k, id, AUDIO_GONE) {
                return false;
            }
        }
        true
    }
}

fn answer_of(r: RtReply) -> Option<Answer> {
    Some(match r {
        RtReply::Ack { sample, .. } => Answer::Ack {
            sample: Some(sample),
        },
        RtReply::Reject { reason, .. } => Answer::Error {
            code: crate::ErrorCode::from_wire(reason.as_code())
                .unwrap_or(crate::ErrorCode::Internal),
            detail: reject_detail(reason),
        },
        RtReply::Pong { nonce, sample, .. } => Answer::Pong {
            nonce,
            t_client_us: None,
            sample: Some(sample),
        },
        RtReply::Transport(_) => return None,
    })
}

fn reject_detail(r: crate::rt::RejectReason) -> &'static str {
    use crate::rt::RejectReason as R;
    match r {
        R::UnknownNode => "the engine has no node with that id",
        R::UnknownParam => "the node has no parameter with that id",
        R::OutOfRange => "value out of range for the engine",
        R::Unsupported => "not supported by this engine",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::hub::Routes;
    use super::super::tests::worker;
    use super::*;
    use crate::clock;
    use crate::config::ServerConfig;
    use crate::message;

    /// Issue 9 review: an answer retried from the holding cell after its session said
    /// `goodbye` is discarded by the session; it must be counted in `answers_discarded` like
    /// one offered directly. Fails before `pump` used `deliver` for the held answer (0).
    #[test]
    fn a_held_answer_discarded_after_goodbye_is_counted() {
        let (mut w, addr, _control, _audio) = worker(ServerConfig::default());
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(&crate::frame::PREFACE).unwrap();
        let hello = message::Hello {
            protocol: message::PROTOCOL_VERSION,
            client: heapless::String::try_from("test").unwrap(),
            token: None,
            attachments: false,
        };
        let mut buf = [0u8; 512];
        let n = message::encode_frame(Some(1), &hello, &mut buf, u32::MAX).unwrap();
        client.write_all(&buf[..n]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.accept_more = true;
        w.accept_all(); // read at once: OPEN
        let key = w.hub.controller.expect("the client holds the session");
        let now = clock::now_ns();
        let c = Worker::conn_by_key(&mut w.slots, key).unwrap();
        c.session.shutdown(now);
        c.session.poll(
            now,
            &mut Routes {
                hub: &mut w.hub,
                key,
            },
        );
        let c = Worker::conn_by_key(&mut w.slots, key).unwrap();
        assert!(c.session.is_closed(), "goodbye queued");
        let answer = Answer::Ack { sample: Some(1) };
        w.hub.held = Some((key, 7, answer));
        w.pump();
        assert!(w.hub.held.is_none(), "the held answer was taken");
        let discarded = w.hub.status.answers_discarded.load(Ordering::Relaxed);
        assert_eq!(discarded, 1, "the answer lost after goodbye is counted");
        // Control: an answer offered directly after the goodbye is counted too.
        Worker::offer(&mut w.slots, &mut w.hub, key, 8, answer);
        assert_eq!(w.hub.status.answers_discarded.load(Ordering::Relaxed), 2);
    }
}
