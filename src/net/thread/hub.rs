//! Routing commands: what a session's [`Driver`] reaches (the audio and control threads).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Status;
use crate::clock;
use crate::control::{ControlLink, ControlOp, ControlRequest, ControlTicket, SendFail};
use crate::message::{self, Command, Health};
use crate::rt::{NetEndpoint, RtCommand, RtOp, MAX_METER_CHANNELS};
use crate::session::{Answer, Driver, RouteError, RouteFull};

/// What the [`Driver`] needs: everything but the connection table.
pub(super) struct Hub {
    pub(super) net: NetEndpoint,
    pub(super) control: ControlLink,
    pub(super) controller: Option<u64>,
    pub(super) last_controller_ns: u64,
    /// Answers owed by the audio thread, oldest first: (owner, command id, an rt ping's
    /// `t_client_us`). The audio thread answers in the order it received, so the front entry
    /// owns the next answer; its pong echoes exactly its own ping's time.
    pub(super) rt_owners: VecDeque<(u64, u32, Option<u64>)>,
    /// The audio thread's endpoint was dropped (seen by `pump`; final): what it still owed is
    /// answered `audio_unavailable`.
    pub(super) audio_gone: bool,
    /// Control requests in flight: (owner, id, ticket). Replies are matched by ticket: ids are
    /// the clients' and need not be unique.
    pub(super) control_owners: VecDeque<(u64, u32, ControlTicket)>,
    /// Sequence number of the last control request (tickets start at 1; 0 is `NONE`).
    pub(super) control_seq: u64,
    pub(super) control_limit: usize,
    /// Answers produced on this thread for a command no route could take.
    pub(super) immediate: VecDeque<(u64, u32, Answer)>,
    /// Answers their owner's transmit buffer had no room for, oldest first: (owner, id, answer).
    /// Later answers to the same owner wait behind them; other owners' are not held up. Sized
    /// at spawn for every answer one session can be owed at once; it can grow (on this thread,
    /// never the audio thread) only when a closing session's held answers and a new session's
    /// owed ones add up beyond that, or the reply queue is larger than the default.
    pub(super) held: VecDeque<(u64, u32, Answer)>,
    pub(super) transport: crate::rt::TransportState,
    pub(super) peak: [f32; MAX_METER_CHANNELS],
    pub(super) rms: [f32; MAX_METER_CHANNELS],
    pub(super) meter_n: usize,
    pub(super) dsp_load_max: f32,
    pub(super) status: Arc<Status>,
    /// The analysis mailboxes (`None`: the engine has no analysis worker).
    pub(super) analysis: Option<crate::net::analysis::AnalysisHub>,
}

/// Answers made on this thread (no route could take the command) waiting for `pump`.
pub(super) const IMMEDIATE_CAPACITY: usize = 16;

/// The driver handed to one session's `poll`.
pub(super) struct Routes<'a> {
    pub(super) hub: &'a mut Hub,
    pub(super) key: u64,
}

impl Driver for Routes<'_> {
    fn claim(&mut self) -> bool {
        if self.hub.controller.is_some() {
            return false;
        }
        self.hub.controller = Some(self.key);
        self.hub
            .status
            .client_connected
            .store(true, Ordering::Relaxed);
        true
    }

    fn release(&mut self) {
        if self.hub.controller == Some(self.key) {
            self.hub.controller = None;
            self.hub.last_controller_ns = clock::now_ns();
            self.hub
                .status
                .client_connected
                .store(false, Ordering::Relaxed);
        }
    }

    fn route_audio(&mut self, id: u32, cmd: &Command) -> Result<(), RouteFull> {
        let Some(op) = rt_op(cmd) else {
            // Not a real-time command: the session never routes one here. Answer, never drop.
            let a = Answer::Error {
                code: crate::ErrorCode::Internal,
                detail: "command has no real-time route",
            };
            return self
                .hub
                .answer_now(self.key, id, a)
                .then_some(())
                .ok_or(RouteFull);
        };
        if self.hub.audio_gone || self.hub.net.is_audio_gone() {
            // Nobody would ever take it: answer now (the next `pump` delivers it).
            let queued = self.hub.answer_now(self.key, id, AUDIO_GONE);
            return queued.then_some(()).ok_or(RouteFull);
        }
        self.hub
            .net
            .try_send(RtCommand { id, op })
            .map_err(|_| RouteFull)?;
        // If the audio side went away after this check, `pump` answers this one too.
        let t_client_us = match cmd {
            Command::Ping(p) => p.t_client_us,
            _ => None,
        };
        self.hub.rt_owners.push_back((self.key, id, t_client_us));
        Ok(())
    }

    fn route_control(&mut self, id: u32, cmd: &Command) -> Result<(), RouteError> {
        let Some(op) = control_op(cmd) else {
            let a = Answer::Error {
                code: crate::ErrorCode::Internal,
                detail: "command has no control route",
            };
            let queued = self.hub.answer_now(self.key, id, a);
            return queued.then_some(()).ok_or(RouteError::Full);
        };
        if self.hub.control_owners.len() >= self.hub.control_limit {
            return Err(RouteError::Full);
        }
        let ticket = ControlTicket::new(self.hub.control_seq + 1);
        match self.hub.control.try_send(ControlRequest { id, op, ticket }) {
            Ok(()) => {
                self.hub.control_seq += 1;
                self.hub.control_owners.push_back((self.key, id, ticket));
                Ok(())
            }
            Err(SendFail::Full) => Err(RouteError::Full),
            Err(SendFail::Unavailable) => Err(RouteError::Unavailable),
        }
    }

    fn snapshot(&mut self) -> (message::TransportState, Health) {
        (self.hub.transport, self.hub.health(0))
    }
}

/// The answer to an audio-route command once the audio thread is gone.
pub(super) const AUDIO_GONE: Answer = Answer::Error {
    code: crate::ErrorCode::AudioUnavailable,
    detail: "the audio thread is gone",
};

fn rt_op(cmd: &Command) -> Option<RtOp> {
    Some(match cmd {
        Command::Play => RtOp::Play,
        Command::Stop => RtOp::Stop,
        Command::Seek(s) => RtOp::Seek { position: s.sample },
        Command::Tempo(t) => RtOp::Tempo { bpm: t.bpm },
        Command::Loop(l) => RtOp::Loop {
            start: l.start,
            end: l.end,
            enabled: l.enabled,
        },
        Command::ParamSet(p) => RtOp::ParamSet {
            node: p.node,
            param: p.param,
            value: p.value,
            ramp_ms: p.ramp_ms.unwrap_or(0.0),
        },
        Command::Ping(p) => RtOp::Ping { nonce: p.nonce },
        _ => return None,
    })
}

fn control_op(cmd: &Command) -> Option<ControlOp> {
    Some(match cmd {
        Command::AddNode(a) => ControlOp::AddNode(a.clone()),
        Command::RemoveNode(r) => ControlOp::RemoveNode { node: r.node },
        Command::Connect(e) => ControlOp::Connect(*e),
        Command::Disconnect(e) => ControlOp::Disconnect(*e),
        Command::Shutdown => ControlOp::Shutdown,
        _ => return None,
    })
}

impl Hub {
    /// Queues an answer made on this thread for the next `pump`; `false` when
    /// [`IMMEDIATE_CAPACITY`] are already waiting (the command then waits in its session like
    /// one facing a full route, so the queue never grows: no allocation).
    pub(super) fn answer_now(&mut self, key: u64, id: u32, a: Answer) -> bool {
        if self.immediate.len() >= IMMEDIATE_CAPACITY {
            return false;
        }
        self.immediate.push_back((key, id, a));
        true
    }

    /// Answers are still to come from a live audio thread.
    pub(super) fn rt_waiting(&self) -> bool {
        !self.audio_gone && self.net.commands_in_flight() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::worker;
    use super::*;
    use crate::config::ServerConfig;

    /// Issue 9 review: with the audio thread gone, every audio command is answered on this
    /// thread through `immediate`; a burst of them in one poll grew it past its capacity
    /// (an allocation on the network thread). Now the 17th waits like one facing a full
    /// route. Fails on the old code (all 40 taken, the queue grown to 40).
    #[test]
    fn the_immediate_queue_never_grows() {
        let (mut w, _addr, _control, audio) = worker(ServerConfig::default());
        drop(audio);
        let capacity = w.hub.immediate.capacity();
        let mut routes = Routes {
            hub: &mut w.hub,
            key: 1,
        };
        let taken = (0..40)
            .take_while(|&id| routes.route_audio(id, &Command::Play).is_ok())
            .count();
        assert_eq!(taken, IMMEDIATE_CAPACITY, "the rest wait in the session");
        assert_eq!(w.hub.immediate.len(), IMMEDIATE_CAPACITY);
        assert_eq!(w.hub.immediate.capacity(), capacity, "no reallocation");
        // Control: once drained (as `pump` does), the next command is taken again.
        w.hub.immediate.clear();
        let mut routes = Routes {
            hub: &mut w.hub,
            key: 1,
        };
        assert!(routes.route_audio(99, &Command::Play).is_ok());
    }
}
