//! When the thread wakes: the next deadline of everything it serves, the prediction of the
//! audio callback's end, and the spin that takes replies while that callback runs.

use super::{ns, Worker};
use crate::clock;
use crate::session::SessionState;

/// Rounds of `spin_for_replies` between two reads of the audio thread's callback flag and clock.
const SPIN_CHECK_EVERY: u32 = 64;
/// With nothing in flight the reply queue is still drained every this many `telemetry_poll`s.
const IDLE_POLL_FACTOR: u64 = 10;
/// When to look for the audio thread's answers, given the predicted end of the callback that
/// takes the queued commands (`None` before the first callback).
///
/// At the predicted end plus `margin`; if that has passed (the callback started late, or is still
/// running: then the wake-up spins), again in [`LATE_CALLBACK_RETRY_NS`] rather than a whole
/// projected period later; if the prediction is older than `poll` (the device stopped), at the
/// safety-net interval `poll`.
fn reply_wake(predicted: Option<u64>, now: u64, margin: u64, poll: u64) -> u64 {
    let safety = now.saturating_add(poll);
    let wake = match predicted {
        Some(t) if t.saturating_add(poll) < now => safety,
        Some(t) if t.saturating_add(margin) > now => t.saturating_add(margin),
        Some(_) => now.saturating_add(LATE_CALLBACK_RETRY_NS),
        None => safety,
    };
    wake.min(safety)
}

/// While the callback that should answer queued commands is late (its predicted end has
/// passed), how soon to look again (ns): short, because the answer leaves at the next look.
const LATE_CALLBACK_RETRY_NS: u64 = 25_000;

impl Worker {
    /// Sets the timer to the next deadline; returns the poll timeout to use.
    pub(super) fn arm(&mut self, now: u64) -> Option<std::time::Duration> {
        let at = self.next_deadline(now);
        if self.timer_ok && self.timer.set(at, now).is_ok() {
            return self.timer.poll_timeout(now);
        }
        self.timer_ok = false;
        at.map(|at| std::time::Duration::from_nanos(at.saturating_sub(now)))
    }

    pub(super) fn next_deadline(&mut self, now: u64) -> Option<u64> {
        let mut at: Option<u64> = None;
        let mut earlier = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        let poll_iv = ns(self.cfg.telemetry_poll);
        let flush = ns(self.cfg.flush_timeout);
        for c in self.slots.iter_mut().flatten() {
            if let Some(t) = c.session.poll_at() {
                earlier(t);
            }
            if let Some(since) = c.closing_since {
                earlier(c.close_by(since, flush, ns(self.cfg.slow_consumer_timeout)));
            }
            if c.session.is_blocked() {
                earlier(now.saturating_add(poll_iv));
            }
            // Not while stopping: nothing is read then, and a byte arriving must not make the
            // loop spin (the flush waits on events and deadlines only).
            let more_to_read = !self.stopping && c.readable && !c.session.rx_space().is_empty();
            let more_to_write = c.writable && !c.session.tx_pending().is_empty();
            let newly_closed =
                c.session.state() >= SessionState::Closing && c.closing_since.is_none();
            if more_to_read || more_to_write || c.dead || newly_closed {
                earlier(now);
            }
        }
        if !self.hub.immediate.is_empty() || (self.accept_more && self.listener.is_some()) {
            earlier(now);
        }
        if self.hub.rt_waiting() || !self.hub.held.is_empty() {
            let margin = ns(self.cfg.wake_margin);
            // A prediction older than the safety interval means the audio thread is not being
            // called (stopped device, paused host): then only the safety net polls, instead of
            // waking once per projected period.
            let predicted = self.hub.net.next_callback_end_ns();
            earlier(reply_wake(predicted, now, margin, poll_iv));
        }
        // Even with nothing in flight, drain the reply queue now and then: transport telemetry
        // keeps arriving, and a full queue makes the audio side drop (and count) it.
        earlier(now.saturating_add(poll_iv.saturating_mul(IDLE_POLL_FACTOR)));
        if self.cfg.supervisor_pid.is_some() || self.cfg.watch_parent {
            earlier(self.next_orphan_check);
        }
        if self.stopping {
            earlier(self.stop_deadline);
            // The half-flush mark (when sessions stop waiting for owed answers) only while
            // ahead: once passed it would make every later pass poll with timeout 0.
            let half = self
                .stop_started
                .saturating_add(ns(self.cfg.flush_timeout) / 2);
            if half > now {
                earlier(half);
            }
        }
        at
    }

    /// Woken for replies: takes them as they arrive, spinning up to `reply_spin` while the
    /// audio callback still runs and answers are still owed.
    ///
    /// The spin polls the reply queue, whose write index the audio thread touches only when it
    /// pushes; `audio_in_callback` (a cache line written every callback, see its docs) and the
    /// clock are read only every [`SPIN_CHECK_EVERY`] rounds.
    pub(super) fn spin_for_replies(&mut self) {
        if !self.hub.rt_waiting() {
            return;
        }
        let until = clock::now_ns().saturating_add(ns(self.cfg.reply_spin));
        let mut round: u32 = 0;
        loop {
            round = round.wrapping_add(1);
            Self::pump_rt(&mut self.slots, &mut self.hub);
            if !self.hub.rt_waiting() {
                return;
            }
            if round.is_multiple_of(SPIN_CHECK_EVERY)
                && (!self.hub.net.audio_in_callback() || clock::now_ns() >= until)
            {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::worker;
    use super::super::NOBODY;
    use super::*;
    use crate::config::ServerConfig;
    use crate::rt::{RtCommand, RtOp};

    #[test]
    fn reply_wake_follows_the_prediction_and_retries_soon_when_the_callback_is_late() {
        const US: u64 = 1_000;
        let poll = 5_000 * US;
        let now = 1_000_000 * US;
        // On time: at the predicted end (plus margin).
        assert_eq!(
            reply_wake(Some(now + 300 * US), now, 0, poll),
            now + 300 * US
        );
        assert_eq!(
            reply_wake(Some(now + 300 * US), now, 50 * US, poll),
            now + 350 * US
        );
        // Late: the predicted end has passed without the answers. Look again in 25 µs, not a
        // whole period (2.67 ms) later, which is what projecting the prediction forward did.
        assert_eq!(
            reply_wake(Some(now - 100 * US), now, 0, poll),
            now + 25 * US
        );
        assert_eq!(
            reply_wake(Some(now - 10 * US), now, 50 * US, poll),
            now + 40 * US
        );
        // The audio thread stopped: only the safety net.
        assert_eq!(reply_wake(Some(now - 6_000 * US), now, 0, poll), now + poll);
        assert_eq!(reply_wake(None, now, 0, poll), now + poll);
        // Never later than the safety net.
        assert_eq!(reply_wake(Some(now + 9_000 * US), now, 0, poll), now + poll);
    }

    /// Woken while the callback still runs: the replies the audio thread already queued are
    /// taken as soon as they are there, not after the callback ends (nor after `reply_spin`).
    #[test]
    fn spin_takes_replies_as_they_arrive_while_the_callback_runs() {
        let cfg = ServerConfig {
            reply_spin: std::time::Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let (mut w, _addr, _control, mut audio) = worker(cfg);
        w.hub
            .net
            .try_send(RtCommand {
                id: 5,
                op: RtOp::Play,
            })
            .unwrap();
        w.hub.rt_owners.push_back((NOBODY, 5, None));
        audio.begin_callback(clock::now_ns(), 48);
        audio.drain(|_| crate::rt::Outcome::Applied); // answered; the callback goes on
        let t0 = std::time::Instant::now();
        w.spin_for_replies();
        let spun = t0.elapsed();
        assert_eq!(w.hub.net.commands_in_flight(), 0, "the answer was taken");
        assert!(
            spun < std::time::Duration::from_millis(100),
            "spun {spun:?} with the answer already queued"
        );
        audio.end_callback(clock::now_ns());
        // Negative control: owed an answer but no callback running, the spin stops at once.
        w.hub
            .net
            .try_send(RtCommand {
                id: 6,
                op: RtOp::Stop,
            })
            .unwrap();
        w.hub.rt_owners.push_back((NOBODY, 6, None));
        let t0 = std::time::Instant::now();
        w.spin_for_replies();
        assert_eq!(w.hub.net.commands_in_flight(), 1, "nothing to take yet");
        assert!(t0.elapsed() < std::time::Duration::from_millis(100));
    }
}
