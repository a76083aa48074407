//! Learns the offset between the host's clock (the `now_ns` the host passes to
//! `AudioEndpoint::begin_callback`/`end_callback`) and this crate's [`clock`](crate::clock), on
//! the network side only: the audio side just publishes the host time at which each callback
//! ended, and never reads a clock.
//!
//! # Method
//!
//! Each time the network thread looks (`NetEndpoint::next_callback_end_ns`,
//! `NetEndpoint::audio_in_callback`), it pairs the last published end `e` (host clock) with its
//! own clock reading `t` taken just after:
//!
//! * the end was visible at `t`, so it happened before: `offset <= t - e` (upper bound `hi`);
//! * when the end is a new one, it was not yet visible at the previous look `t0`, so it happened
//!   after: `offset > t0 - e` (lower bound `lo`).
//!
//! The bracket `[lo, hi]` narrows with every look that straddles a callback end; the network
//! thread's own wake-ups just before and just after the predicted end (its 25 µs retries and its
//! reply spin) straddle it, so it converges to tens of µs within a few callbacks. The estimate is
//! `0` while `0` lies in the bracket (give or take [`SAME_CLOCK_TOLERANCE_NS`]: a host that uses
//! [`clock::now_ns`](crate::clock::now_ns) is never shifted), else `hi` while there is no lower
//! bound yet, else the bracket's middle. A bracket that becomes empty (a host clock that jumped,
//! or runs at another rate) is started afresh, and the restart is counted.
//!
//! Requirement on the host clock: monotonic, in nanoseconds, at the rate of real time (drift of
//! a few ppm is absorbed by the restarts). Any epoch.

/// How far outside the bracket `0` may lie and still be taken as "same clock" (ns).
pub(crate) const SAME_CLOCK_TOLERANCE_NS: i64 = 50_000;

/// The network side's estimate. `Copy`, kept in a `Cell` of the `NetEndpoint`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClockSync {
    lo: i64,
    hi: i64,
    last_end: u64,
    last_look: u64,
    seen: bool,
    offset: i64,
    restarts: u64,
}

impl Default for ClockSync {
    fn default() -> Self {
        ClockSync {
            lo: i64::MIN,
            hi: i64::MAX,
            last_end: 0,
            last_look: 0,
            seen: false,
            offset: 0,
            restarts: 0,
        }
    }
}

/// `a - b` of two clock readings as a signed difference (any epochs, wrapping).
fn diff(a: u64, b: u64) -> i64 {
    a.wrapping_sub(b) as i64
}

impl ClockSync {
    /// One look: `end` is the last published callback end (host clock), `now` this crate's
    /// clock read after loading it.
    pub(crate) fn observe(&mut self, end: u64, now: u64) {
        let upper = diff(now, end);
        if self.seen && end != self.last_end {
            if diff(end, self.last_end) < 0 {
                self.restart(upper); // the host clock went backwards
            } else {
                self.lo = self.lo.max(diff(self.last_look, end));
            }
        }
        self.hi = self.hi.min(upper);
        if self.lo > self.hi.saturating_add(SAME_CLOCK_TOLERANCE_NS) {
            self.restart(upper);
        }
        self.last_end = end;
        self.last_look = now;
        self.seen = true;
        self.offset = self.estimate();
    }

    fn restart(&mut self, upper: i64) {
        self.lo = i64::MIN;
        self.hi = upper;
        self.restarts = self.restarts.wrapping_add(1);
    }

    fn estimate(&self) -> i64 {
        let tol = SAME_CLOCK_TOLERANCE_NS;
        if self.lo <= tol && self.hi >= -tol {
            0
        } else if self.lo == i64::MIN {
            self.hi
        } else {
            self.lo / 2 + self.hi / 2
        }
    }

    /// Host time to this crate's clock: `host + offset`.
    pub(crate) fn local_time(&self, host: u64) -> u64 {
        host.wrapping_add_signed(self.offset)
    }

    /// The current estimate of `local - host` (ns).
    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    /// Times the bracket was started afresh.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: u64 = 10_000_000;

    /// Looks every `step` ns of local time at a host whose clock is `local + host_minus_local`
    /// and whose callbacks end every `PERIOD` (host time); returns the estimate of
    /// `local - host`.
    fn converge(host_minus_local: i64, step: u64, looks: u64) -> ClockSync {
        let mut s = ClockSync::default();
        let t0 = 5_000_000_000u64;
        for i in 0..looks {
            let local = t0 + i * step;
            let host = local.wrapping_add_signed(host_minus_local);
            let last_end = host / PERIOD * PERIOD;
            s.observe(last_end, local);
        }
        s
    }

    #[test]
    fn same_clock_is_never_shifted() {
        for step in [7_000, 333_000, 4_999_000] {
            assert_eq!(converge(0, step, 1_000).offset(), 0);
        }
    }

    #[test]
    fn a_large_offset_is_learned_to_within_the_look_interval() {
        for off in [1_000_000_000_000_000i64, -3_000_000_000, 123_456_789] {
            let step = 25_000;
            let s = converge(off, step, 10_000);
            let err = (s.offset() + off).abs();
            assert!(
                err <= step as i64,
                "offset {off}: estimate {} err {err}",
                s.offset()
            );
            assert_eq!(s.restarts(), 0);
        }
    }

    /// Negative control: a "clock" at a thousandth of the rate of real time (microseconds
    /// passed as nanoseconds) keeps emptying the bracket; the restarts show it.
    #[test]
    fn a_clock_at_the_wrong_rate_keeps_restarting() {
        let mut s = ClockSync::default();
        for i in 0..10_000u64 {
            let local = 1_000_000_000 + i * 25_000;
            let host_us = local / 1_000;
            s.observe(host_us / 10_000 * 10_000, local);
        }
        assert!(s.restarts() > 10, "restarts {}", s.restarts());
    }
}
