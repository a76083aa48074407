//! The two endpoints of the bridge and the one constructor that allocates them.

use super::clock_sync::ClockSync;
use super::health::{CallbackStats, Health, HealthSnapshot};
use super::meters::{meter_bank, MeterReader, MeterWriter};
use super::tap::{tap_bank, TapError, TapReader, TapWriter};
use super::types::{Outcome, RtCommand, RtOp, RtReply, TransportState};
use super::MAX_METER_CHANNELS;
use rtrb::{Consumer, Producer, RingBuffer};
use std::cell::Cell;
use std::sync::Arc;

/// Capacities and options of the bridge. All allocation happens in [`bridge`] from these.
///
/// ```
/// use loophole_ipc::rt::{bridge, RtConfig};
/// let cfg = RtConfig::default().with_command_capacity(1024).with_meter_channels(16);
/// let (_audio, net) = bridge(&cfg);
/// assert_eq!(net.health().cmd_queue_capacity, 1024);
/// assert_eq!(net.meter_channels(), 16);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RtConfig {
    /// Slots in the command queue (network → audio). Default `256`. Clamped to at least 1.
    pub command_capacity: usize,
    /// Slots in the reply queue (audio → network). Default `512`. Raised to at least
    /// `drain_budget + 1` so one full drain's answers plus one telemetry item always fit.
    pub reply_capacity: usize,
    /// Metered channels, `1..=`[`MAX_METER_CHANNELS`]. Default `2`. Clamped to that range.
    pub meter_channels: usize,
    /// Most commands handled per callback (summed over all `drain` calls in it). Default `32`.
    /// Clamped to `1..=command_capacity`.
    pub drain_budget: usize,
    /// Nominal sample rate in Hz, used to turn `frames` into a period for the DSP load and the
    /// wake-up prediction. Default `48_000`. Changeable later with
    /// [`AudioEndpoint::set_sample_rate`].
    pub sample_rate: u32,
    /// Taps (rings of recent samples the audio thread fills, see [`tap`](super::tap)),
    /// `0..=`[`MAX_TAPS`](super::MAX_TAPS). Default `0`: no tap memory at all.
    pub taps: usize,
    /// Samples per tap ring; rounded up to a power of two within
    /// [`MIN_TAP_CAPACITY`](super::tap::MIN_TAP_CAPACITY)`..=`[`MAX_TAP_CAPACITY`](super::tap::MAX_TAP_CAPACITY).
    /// Default `4096`.
    pub tap_capacity: usize,
    /// With the `rt-wake` feature: a waker the audio thread triggers at the end of a callback
    /// that answered a command (one `write(2)` on an eventfd). `None` (the default) means no
    /// system call at all; the network thread then uses [`NetEndpoint::next_callback_end_ns`].
    /// A bridge built with a waker keeps waking across server restarts: each server spawned on
    /// its [`NetEndpoint`] installs its own ([`NetEndpoint::set_waker`]).
    #[cfg(feature = "rt-wake")]
    pub waker: Option<Arc<mio::Waker>>,
}

impl Default for RtConfig {
    fn default() -> Self {
        RtConfig {
            command_capacity: 256,
            reply_capacity: 512,
            meter_channels: 2,
            drain_budget: 32,
            sample_rate: 48_000,
            taps: 0,
            tap_capacity: 4096,
            #[cfg(feature = "rt-wake")]
            waker: None,
        }
    }
}

impl RtConfig {
    /// Sets [`command_capacity`](Self::command_capacity).
    pub fn with_command_capacity(mut self, slots: usize) -> Self {
        self.command_capacity = slots;
        self
    }

    /// Sets [`reply_capacity`](Self::reply_capacity).
    pub fn with_reply_capacity(mut self, slots: usize) -> Self {
        self.reply_capacity = slots;
        self
    }

    /// Sets [`meter_channels`](Self::meter_channels).
    pub fn with_meter_channels(mut self, channels: usize) -> Self {
        self.meter_channels = channels;
        self
    }

    /// Sets [`drain_budget`](Self::drain_budget).
    pub fn with_drain_budget(mut self, commands: usize) -> Self {
        self.drain_budget = commands;
        self
    }

    /// Sets [`sample_rate`](Self::sample_rate).
    pub fn with_sample_rate(mut self, hz: u32) -> Self {
        self.sample_rate = hz;
        self
    }

    /// Sets [`taps`](Self::taps) and [`tap_capacity`](Self::tap_capacity): `taps` rings of
    /// `capacity_frames` samples each, allocated in [`bridge`].
    ///
    /// ```
    /// use loophole_ipc::rt::{bridge, RtConfig};
    /// let (mut audio, mut net) = bridge(&RtConfig::default().with_taps(2, 4096));
    /// let mut taps = net.take_taps().expect("taps configured");
    /// audio.publish_tap(1, &[0.25; 128]).unwrap();
    /// let mut window = [0.0f32; 512];
    /// let got = taps.latest(1, &mut window).unwrap();
    /// assert_eq!((got.samples, got.missed), (128, 0));
    /// assert_eq!(window[..128], [0.25; 128]);
    /// ```
    pub fn with_taps(mut self, taps: usize, capacity_frames: usize) -> Self {
        self.taps = taps;
        self.tap_capacity = capacity_frames;
        self
    }

    /// Sets [`waker`](Self::waker) (`rt-wake` feature).
    #[cfg(feature = "rt-wake")]
    pub fn with_waker(mut self, waker: Arc<mio::Waker>) -> Self {
        self.waker = Some(waker);
        self
    }
}

/// Creates the bridge: the audio thread's [`AudioEndpoint`] and the network thread's
/// [`NetEndpoint`].
///
/// This is the only function of the bridge that allocates: the two `rtrb` queues, the two
/// meter banks and the shared counters. The memory is freed when the *last* of the two halves
/// is dropped — so drop the [`AudioEndpoint`] outside the audio callback, or keep the
/// [`NetEndpoint`] alive until the audio side is gone.
pub fn bridge(cfg: &RtConfig) -> (AudioEndpoint, NetEndpoint) {
    let command_capacity = cfg.command_capacity.max(1);
    let budget = cfg.drain_budget.clamp(1, command_capacity);
    let reply_capacity = cfg.reply_capacity.max(budget.saturating_add(1));
    let (cmd_tx, cmd_rx) = RingBuffer::new(command_capacity);
    let (reply_tx, reply_rx) = RingBuffer::new(reply_capacity);
    let (tap_w, tap_r) = tap_bank(cfg.taps, cfg.tap_capacity);
    let (meter_w, meter_r) = meter_bank(cfg.meter_channels.min(MAX_METER_CHANNELS));
    let health = Arc::new(Health::default());
    #[cfg(feature = "rt-wake")]
    let (audio_wake, net_wake) = super::wake::wake_route(cfg.waker.clone());
    let audio = AudioEndpoint {
        commands: cmd_rx,
        replies: reply_tx,
        meters: meter_w,
        taps: tap_w,
        health: Arc::clone(&health),
        budget,
        remaining: budget,
        sample_rate: cfg.sample_rate.max(1),
        block_start: 0,
        clock: 0,
        start_ns: 0,
        period_ns: 0,
        answered: false,
        stats: CallbackStats::default(),
        #[cfg(feature = "rt-wake")]
        wake: audio_wake,
    };
    let net = NetEndpoint {
        commands: cmd_tx,
        replies: reply_rx,
        meters: meter_r,
        taps: (cfg.taps > 0).then_some(tap_r),
        health,
        sent: 0,
        answered: 0,
        clock: Cell::new(ClockSync::default()),
        #[cfg(feature = "rt-wake")]
        wake: net_wake,
    };
    (audio, net)
}

/// The audio thread's end of the bridge.
///
/// Every method is wait-free and bounded, allocates nothing, takes no lock and makes no system
/// call (the one exception is opt-in: the `rt-wake` feature with a configured waker makes one
/// `write(2)` in [`end_callback`](Self::end_callback), see there). The endpoint never reads a
/// clock: the host passes time in.
///
/// It is `Send` (move it to the audio thread once) but not `Sync`: sharing it between threads
/// does not compile.
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let (audio, _net) = loophole_ipc::rt::bridge(&Default::default());
/// shared(&audio);
/// ```
///
/// # A callback
///
/// ```
/// use loophole_ipc::rt::{bridge, Outcome, RejectReason, RtConfig, RtOp, TransportState};
///
/// let (mut audio, mut net) = bridge(&RtConfig::default());
/// # net.try_send(loophole_ipc::rt::RtCommand { id: 7, op: RtOp::Play }).unwrap();
/// let mut transport = TransportState {
///     playing: false, position: 0, bpm: 120.0, loop_start: 0, loop_end: 0, loop_enabled: false,
/// };
/// let mut left = [0.0f32; 256];
/// let mut right = [0.0f32; 256];
///
/// // Inside the host's audio callback (`now_ns` comes from the host's clock):
/// let now_ns = 1_000_000;
/// audio.begin_callback(now_ns, 256);
/// audio.drain(|cmd| match cmd.op {
///     RtOp::Play => { transport.playing = true; Outcome::Applied }
///     RtOp::Stop => { transport.playing = false; Outcome::Applied }
///     RtOp::Tempo { bpm } if (20.0..=999.0).contains(&bpm) => { transport.bpm = bpm; Outcome::Applied }
///     RtOp::Tempo { .. } => Outcome::Rejected(RejectReason::OutOfRange),
///     _ => Outcome::Rejected(RejectReason::Unsupported),
/// });
/// // ... render into left/right ...
/// audio.publish_meters(&[&left, &right]);
/// audio.publish_transport(&transport);
/// audio.end_callback(now_ns + 1_500_000);
///
/// // On the network thread:
/// assert_eq!(
///     net.pop_reply(),
///     Some(loophole_ipc::rt::RtReply::Ack { id: 7, sample: 0 })
/// );
/// # left[0] = 0.0; right[0] = 0.0;
/// ```
#[derive(Debug)]
pub struct AudioEndpoint {
    commands: Consumer<RtCommand>,
    replies: Producer<RtReply>,
    meters: MeterWriter,
    taps: TapWriter,
    health: Arc<Health>,
    budget: usize,
    remaining: usize,
    sample_rate: u32,
    block_start: u64,
    clock: u64,
    start_ns: u64,
    period_ns: u64,
    answered: bool,
    stats: CallbackStats,
    #[cfg(feature = "rt-wake")]
    wake: super::wake::AudioWake,
}

impl AudioEndpoint {
    /// Starts a callback of `frames` frames at host time `now_ns`.
    ///
    /// Resets this callback's drain budget, fixes the block's first sample (the sample position
    /// acks report), publishes the start time and period for the network thread's wake-up
    /// prediction, and hands the meter interval over if the network side asked. With the
    /// `rt-guard` feature it also marks this thread as inside the audio callback.
    ///
    /// # The clock
    ///
    /// `now_ns` (here and in [`end_callback`](Self::end_callback)) may come from any monotonic
    /// clock in nanoseconds at the rate of real time, with any epoch: the host's own
    /// (CoreAudio host time converted to ns, JUCE's high-resolution ticks in ns, a cpal
    /// `StreamInstant`), or [`clock::now_ns`](crate::clock::now_ns). The endpoint never reads a
    /// clock; the network side learns the offset between the host's clock and its own from the
    /// published callback ends ([`NetEndpoint::host_clock_offset_ns`]), so its wake-up lands at
    /// the callback's end either way. Pass the same clock to both calls. A clock at another
    /// rate (microseconds, samples) defeats the prediction: the bracket keeps restarting (its
    /// count is the second value of `host_clock_offset_ns`) and answers wait for the safety
    /// poll (`ServerConfig::telemetry_poll`).
    #[inline]
    pub fn begin_callback(&mut self, now_ns: u64, frames: u32) {
        #[cfg(feature = "rt-guard")]
        super::guard::enter_callback();
        self.remaining = self.budget;
        self.answered = false;
        self.block_start = self.clock;
        self.clock = self.clock.wrapping_add(u64::from(frames));
        self.start_ns = now_ns;
        self.period_ns = u64::from(frames) * 1_000_000_000 / u64::from(self.sample_rate);
        self.health.publish_start(now_ns, self.period_ns);
        self.meters.begin();
        #[cfg(feature = "rt-wake")]
        self.wake.adopt();
    }

    /// Hands queued commands to `apply`, oldest first, and pushes exactly one answer for each.
    ///
    /// At most the callback's remaining budget is handled (the budget is per callback, shared
    /// by all `drain` calls between `begin_callback` and `end_callback`). A command is popped
    /// only when the reply queue has a free slot for its answer, so an answer is never lost:
    /// when replies back up, commands simply stay queued. [`RtOp::Ping`] is answered here with
    /// [`RtReply::Pong`] and never reaches `apply`.
    ///
    /// The ack's `sample` is the block's first sample plus the [`Outcome::AppliedAt`] offset
    /// (not checked against the block length: an engine may schedule into a later block).
    /// Returns the number of commands answered.
    ///
    /// `apply` runs on the audio thread and must itself be real-time safe. If it panics, the
    /// command being applied has been popped and gets no answer.
    #[inline]
    pub fn drain<F: FnMut(&RtCommand) -> Outcome>(&mut self, mut apply: F) -> usize {
        let queued = self.commands.slots() as u64;
        if queued > self.stats.cmd_queue_high {
            self.stats.cmd_queue_high = queued;
        }
        let mut handled = 0;
        while self.remaining > 0 && !self.commands.is_empty() {
            if !self.reply_room(1) {
                self.stats.reply_stalls = self.stats.reply_stalls.wrapping_add(1);
                break;
            }
            let Ok(cmd) = self.commands.pop() else { break };
            let reply = self.answer(&cmd, &mut apply);
            self.push_reply(reply);
            self.answered = true;
            self.remaining -= 1;
            handled += 1;
        }
        handled
    }

    /// Pushes transport telemetry if that leaves room for the answers the rest of this
    /// callback's drain budget could need; otherwise drops it and counts the drop in
    /// [`HealthSnapshot::telemetry_dropped`]. Returns whether it was pushed. Never blocks.
    #[inline]
    pub fn publish_transport(&mut self, state: &TransportState) -> bool {
        if self.reply_room(self.remaining.saturating_add(1)) {
            self.push_reply(RtReply::Transport(*state));
            true
        } else {
            self.stats.telemetry_dropped = self.stats.telemetry_dropped.wrapping_add(1);
            false
        }
    }

    /// Adds one block of `channel`'s samples to the meters (peak-hold and RMS accumulate until
    /// the network side takes them). Channels beyond the configured count are ignored.
    #[inline]
    pub fn publish_meter(&mut self, channel: usize, block: &[f32]) {
        self.meters.publish(channel, block);
    }

    /// [`publish_meter`](Self::publish_meter) for channels `0..channels.len()`.
    #[inline]
    pub fn publish_meters(&mut self, channels: &[&[f32]]) {
        for (channel, block) in channels.iter().enumerate() {
            self.meters.publish(channel, block);
        }
    }

    /// Adds levels the engine already computed (`peak` = max |x|, `sum_sq` = Σx² over
    /// `frames` samples) — O(1) per channel.
    #[inline]
    pub fn publish_levels(&mut self, channel: usize, peak: f32, sum_sq: f64, frames: u64) {
        self.meters.publish_levels(channel, peak, sum_sq, frames);
    }

    /// Appends one block of a tapped signal to tap `tap`'s ring, overwriting its oldest
    /// samples (the reader counts what it missed; see [`tap`](super::tap)). Wait-free: at most
    /// `tap_capacity` atomic stores plus three, no allocation, lock or system call.
    /// [`TapError::NoSuchTap`] if `tap >= taps`.
    #[inline]
    pub fn publish_tap(&mut self, tap: usize, block: &[f32]) -> Result<(), TapError> {
        self.taps.publish(tap, block)
    }

    /// Counts an xrun reported by the host.
    #[inline]
    pub fn report_xrun(&mut self) {
        self.stats.xruns = self.stats.xruns.wrapping_add(1);
    }

    /// Ends the callback at host time `now_ns`: computes the DSP load
    /// (`(now_ns - start) / period`) and publishes the health counters (one atomic store per
    /// field).
    ///
    /// With the `rt-wake` feature and a configured waker, and only if this callback pushed at
    /// least one answer (`Ack`, `Reject` or `Pong`; telemetry alone does not wake), it then
    /// calls [`mio::Waker::wake`] once: on Linux one non-blocking `write(2)` of 8 bytes to an
    /// eventfd (plus a `read(2)` and a second `write(2)` only if the eventfd counter were about
    /// to overflow, after 2⁶⁴−2 unread wakes). A failure is counted in
    /// [`HealthSnapshot::wake_errors`]. Without that feature and waker: no system call.
    #[inline]
    pub fn end_callback(&mut self, now_ns: u64) {
        let duration = now_ns.saturating_sub(self.start_ns);
        let load = if self.period_ns == 0 {
            0.0
        } else {
            (duration as f64 / self.period_ns as f64) as f32
        };
        let s = &mut self.stats;
        s.callbacks = s.callbacks.wrapping_add(1);
        s.dsp_load = load;
        if load > s.dsp_load_max {
            s.dsp_load_max = load;
        }
        s.sample_clock = self.clock;
        s.last_duration_ns = duration;
        s.last_end_ns = now_ns;
        self.meters.publish_load(load);
        #[cfg(feature = "rt-wake")]
        self.wake();
        self.health.publish_end(&self.stats);
        #[cfg(feature = "rt-guard")]
        super::guard::exit_callback();
    }

    /// Changes the nominal sample rate (used from the next `begin_callback`). `0` is ignored.
    pub fn set_sample_rate(&mut self, hz: u32) {
        if hz != 0 {
            self.sample_rate = hz;
        }
    }

    /// The engine sample clock: frames announced by all `begin_callback` calls so far.
    pub fn sample_clock(&self) -> u64 {
        self.clock
    }

    /// The current block's first sample (the position acks of this callback report).
    pub fn block_start(&self) -> u64 {
        self.block_start
    }

    /// Commands this callback may still handle.
    pub fn remaining_budget(&self) -> usize {
        self.remaining
    }

    /// Whether the [`NetEndpoint`] has been dropped (replies then go nowhere; the endpoint
    /// keeps working and never blocks). `true` is final; `false` may be stale. One atomic load.
    pub fn is_net_gone(&self) -> bool {
        self.replies.is_abandoned()
    }

    #[inline]
    fn answer<F: FnMut(&RtCommand) -> Outcome>(&self, cmd: &RtCommand, apply: &mut F) -> RtReply {
        if let RtOp::Ping { nonce } = cmd.op {
            return RtReply::Pong {
                id: cmd.id,
                nonce,
                sample: self.block_start,
            };
        }
        match apply(cmd) {
            Outcome::Applied => RtReply::Ack {
                id: cmd.id,
                sample: self.block_start,
            },
            Outcome::AppliedAt { offset } => RtReply::Ack {
                id: cmd.id,
                sample: self.block_start.wrapping_add(u64::from(offset)),
            },
            Outcome::Rejected(reason) => RtReply::Reject { id: cmd.id, reason },
        }
    }

    /// Whether at least `need` reply slots are free (cached count first, atomic load if not).
    #[inline]
    fn reply_room(&self, need: usize) -> bool {
        self.replies.cached_slots() >= need || self.replies.slots() >= need
    }

    /// Pushes a reply the caller has made room for.
    #[inline]
    fn push_reply(&mut self, reply: RtReply) {
        // Cannot fail: this thread is the only producer and `reply_room` saw a free slot (the
        // consumer can only free more). No panic path on the audio thread even so; the
        // exactly-once tests in rt-tests would catch a lost answer.
        let _ = self.replies.push(reply);
        let used = (self.replies.buffer().capacity() - self.replies.cached_slots()) as u64;
        if used > self.stats.reply_queue_high {
            self.stats.reply_queue_high = used;
        }
    }

    #[cfg(feature = "rt-wake")]
    #[inline]
    fn wake(&mut self) {
        if !self.answered {
            return;
        }
        if let Some(result) = self.wake.wake() {
            if result.is_err() {
                self.stats.wake_errors = self.stats.wake_errors.wrapping_add(1);
            }
        }
    }
}

/// The network thread's end of the bridge.
///
/// Nothing here blocks or allocates. It is `Send` but not `Sync`. [`health`](Self::health),
/// [`next_callback_end_ns`](Self::next_callback_end_ns) and [`take_meters`](Self::take_meters)
/// read cache lines the audio thread writes every callback: call them at telemetry or wake-up
/// rate, not in a spin loop ([`commands_in_flight`](Self::commands_in_flight) is local and free).
///
/// One wake-up of the network thread:
///
/// ```
/// use loophole_ipc::rt::{bridge, RtCommand, RtConfig, RtOp, RtReply};
/// let (mut audio, mut net) = bridge(&RtConfig::default().with_sample_rate(48_000));
/// use loophole_ipc::clock;
/// // A callback of 480 frames (10 ms) that took 20 µs, timed with this crate's clock.
/// let start = clock::now_ns();
/// # audio.begin_callback(start, 480);
/// # audio.end_callback(start + 20_000);
/// // Queue what the client sent; on Err stop reading its socket (TCP back-pressure).
/// net.try_send(RtCommand { id: 1, op: RtOp::Ping { nonce: 9 } }).unwrap();
/// // Sleep until just after the callback that will take it (this crate's clock, in ns).
/// let wake_at = net.next_callback_end_after(clock::now_ns()).unwrap();
/// assert_eq!(wake_at, start + 10_020_000); // start + period 10 ms + last duration 20 µs
/// assert_eq!(net.host_clock_offset_ns().0, 0, "the host used our clock");
/// # audio.begin_callback(start + 10_000_000, 480);
/// # audio.drain(|_| unreachable!("pings never reach the engine"));
/// # audio.end_callback(start + 10_020_000);
/// // ... after waking:
/// while let Some(reply) = net.pop_reply() {
///     assert!(matches!(reply, RtReply::Pong { id: 1, nonce: 9, sample: 480 }));
/// }
/// assert_eq!(net.commands_in_flight(), 0);
/// net.collect_meters(); // keeps meters one callback fresh; take_meters at the client's rate
/// ```
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let (_audio, net) = loophole_ipc::rt::bridge(&Default::default());
/// shared(&net);
/// ```
#[derive(Debug)]
pub struct NetEndpoint {
    commands: Producer<RtCommand>,
    replies: Consumer<RtReply>,
    meters: MeterReader,
    taps: Option<TapReader>,
    health: Arc<Health>,
    sent: u64,
    answered: u64,
    clock: Cell<ClockSync>,
    #[cfg(feature = "rt-wake")]
    wake: super::wake::NetWake,
}

impl NetEndpoint {
    /// `rt-wake`: gives the audio side `waker` in place of the one it has (if any); the audio
    /// side takes it at the start of its next callback and hands the old one back to be
    /// dropped here, never in the callback. A server spawned on this endpoint calls it with its
    /// own event loop's waker when [`wakes`](Self::wakes) is true, so the wake-ups follow the
    /// server across restarts. Network thread; allocates nothing; never blocks.
    #[cfg(feature = "rt-wake")]
    pub fn set_waker(&mut self, waker: Arc<mio::Waker>) {
        self.wake.install(waker);
    }

    /// `rt-wake`: whether this bridge wakes the network thread (built with
    /// [`RtConfig::with_waker`], or given one by [`set_waker`](Self::set_waker)).
    #[cfg(feature = "rt-wake")]
    pub fn wakes(&self) -> bool {
        self.wake.wanted()
    }

    /// Queues a command for the audio thread. When the queue is full the command is given back
    /// in `Err` (stop reading that client's socket: TCP pushes back; nothing is dropped).
    ///
    /// `Ok` is final: the command will be answered exactly once (unless the audio side is
    /// dropped). `Err` may be stale by the time it returns: the audio thread can free a slot at
    /// any moment; retry after the next callback.
    pub fn try_send(&mut self, cmd: RtCommand) -> Result<(), RtCommand> {
        match self.commands.push(cmd) {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(cmd)) => Err(cmd),
        }
    }

    /// Takes the next reply or telemetry item, oldest first. `None` may be stale immediately
    /// (the audio thread can push at any moment). Answers come in the order the commands were
    /// sent; telemetry is interleaved at the point it was produced.
    pub fn pop_reply(&mut self) -> Option<RtReply> {
        #[cfg(feature = "rt-wake")]
        if self.wake.has_pending() {
            self.wake.flush();
        }
        let mut reply = self.replies.pop().ok()?;
        if reply.answers().is_some() {
            self.answered += 1;
        }
        if let RtReply::Transport(t) = &mut reply {
            // JSON has no NaN or infinity: a non-finite tempo (an engine fault) is sent as 0.
            if !t.bpm.is_finite() {
                t.bpm = 0.0;
            }
        }
        Some(reply)
    }

    /// Copies everything metered since the previous call into `peak` and `rms` (linear) and
    /// resets. Returns the channels written, or `0` if no callback completed a meter interval
    /// since the previous call (buffers untouched, nothing lost). Values are consistent across
    /// channels (no torn read), and every published sample counts exactly once: the peak is
    /// the true peak since the previous call.
    ///
    /// Freshness: the data ends at the first callback after the previous
    /// [`collect_meters`](Self::collect_meters) or `take_meters`; call `collect_meters` at every
    /// wake-up to keep that about one callback old.
    ///
    /// A channel that carried a non-finite sample (NaN, ±infinity) in the interval reports
    /// `f32::MAX` for both values: JSON cannot carry NaN, and the fault should show loudly.
    pub fn take_meters(&mut self, peak: &mut [f32], rms: &mut [f32]) -> usize {
        self.meters.take(peak, rms)
    }

    /// Folds the meter interval the audio thread completed (if any) into this endpoint's
    /// accumulators and starts the next one; returns whether anything was folded. Cheap (one
    /// atomic load when nothing completed); call it at every wake-up for fresh meters.
    pub fn collect_meters(&mut self) -> bool {
        self.meters.collect()
    }

    /// The highest DSP load of the callbacks since the previous call — the interval max the
    /// `engine.health` frame reports — or `None` if no callback completed an interval since
    /// then. Exact (every callback counts in exactly one interval); handed over like the meters,
    /// so it ends at the first callback after the previous `collect_meters`/`take_*` call.
    pub fn take_dsp_load_max(&mut self) -> Option<f32> {
        self.meters.take_load_max()
    }

    /// Hands out the consumer half of the taps, once (move it to the thread that computes the
    /// scope or spectrum). `None` if no taps were configured or it was already taken.
    pub fn take_taps(&mut self) -> Option<TapReader> {
        self.taps.take()
    }

    /// Number of metered channels.
    pub fn meter_channels(&self) -> usize {
        self.meters.channels()
    }

    /// The engine's health counters, read without a lock (fields may come from consecutive
    /// callbacks; see [`HealthSnapshot`]).
    pub fn health(&self) -> HealthSnapshot {
        let capacity = self.commands.buffer().capacity();
        self.health
            .snapshot(capacity - self.commands.slots(), capacity)
    }

    /// Commands sent whose answer (`Ack`, `Reject` or `Pong`) has not been popped yet. Exact:
    /// both counts are kept on this thread.
    pub fn commands_in_flight(&self) -> usize {
        usize::try_from(self.sent - self.answered).unwrap_or(usize::MAX)
    }

    /// Predicted time, in this crate's clock ([`clock::now_ns`](crate::clock::now_ns)), at which
    /// the callback that will take the commands queued now ends: last start + period + last
    /// callback's duration, converted from the host's clock with the learned offset (see
    /// [`host_clock_offset_ns`](Self::host_clock_offset_ns)). `None` before the first
    /// `begin_callback`. Reads the clock once (to refine the offset).
    ///
    /// It is a prediction from three independently read atomics: under a race the start may be
    /// one callback newer than the duration, and if the audio thread stops being called the
    /// value lies in the past (use [`next_callback_end_after`](Self::next_callback_end_after)).
    pub fn next_callback_end_ns(&self) -> Option<u64> {
        let t = self.health.timing();
        if t.period_ns == 0 {
            return None;
        }
        let sync = self.look();
        Some(
            sync.local_time(
                t.start_ns
                    .saturating_add(t.period_ns)
                    .saturating_add(t.last_duration_ns),
            ),
        )
    }

    /// The learned offset of this crate's clock from the host's (`local - host`, ns): `0` for a
    /// host that passes [`clock::now_ns`](crate::clock::now_ns) (or one within 50 µs of it),
    /// else the middle of the bracket the network side's looks have narrowed (see
    /// `src/rt/clock_sync.rs`), and the times the bracket had to restart (a host clock that
    /// jumped or does not run at the rate of real time: predictions are then poor, and the
    /// network thread falls back on its safety poll).
    pub fn host_clock_offset_ns(&self) -> (i64, u64) {
        let s = self.clock.get();
        (s.offset(), s.restarts())
    }

    /// Pairs the last published callback end with a reading of this crate's clock.
    fn look(&self) -> ClockSync {
        let mut sync = self.clock.get();
        if self.health.timing().period_ns != 0 {
            let end = self.health.last_end_ns();
            sync.observe(end, crate::clock::now_ns());
            self.clock.set(sync);
        }
        sync
    }

    /// Like [`next_callback_end_ns`](Self::next_callback_end_ns) but projected forward by
    /// whole periods so the result is `>= now_ns` (for a network thread that woke late).
    pub fn next_callback_end_after(&self, now_ns: u64) -> Option<u64> {
        let t = self.health.timing();
        let predicted = self.next_callback_end_ns()?;
        if predicted >= now_ns {
            return Some(predicted);
        }
        let periods = (now_ns - predicted).div_ceil(t.period_ns.max(1));
        Some(predicted.saturating_add(periods.saturating_mul(t.period_ns.max(1))))
    }

    /// Whether the audio thread is between `begin_callback` and `end_callback` right now
    /// (stale as soon as it is read).
    /// Also refines the host clock offset (one clock read).
    pub fn audio_in_callback(&self) -> bool {
        let inside = self.health.in_callback();
        self.look();
        inside
    }

    /// Whether the [`AudioEndpoint`] has been dropped. `true` is final; `false` may be stale.
    pub fn is_audio_gone(&self) -> bool {
        self.commands.is_abandoned()
    }

    /// Total commands accepted by [`try_send`](Self::try_send).
    pub fn commands_sent(&self) -> u64 {
        self.sent
    }
}
