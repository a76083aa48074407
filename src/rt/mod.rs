//! The real-time bridge between the network thread and the audio thread.
//!
//! # Shape
//!
//! [`bridge`] is the one constructor: it allocates two `rtrb` single-producer/single-consumer
//! queues (commands towards the audio thread, replies and telemetry back), a double-banked
//! meter accumulator and a block of health counters, and returns one handle per thread role:
//! [`AudioEndpoint`] (moved into the audio callback) and [`NetEndpoint`] (owned by the network
//! thread). Nothing else in this module allocates; dropping the last of the two handles frees.
//!
//! # Guarantees of the audio side
//!
//! Every [`AudioEndpoint`] method is wait-free and bounded, allocates nothing, takes no lock
//! and makes no system call (checked at run time in `rt-tests`: a counting allocator and a
//! seccomp filter around 100 000+ callbacks). The one opt-in exception is the `rt-wake`
//! feature with a configured [`mio::Waker`]: one `write(2)` in `end_callback` of a callback
//! that answered at least one command.
//!
//! * **Bounded drain.** [`AudioEndpoint::drain`] handles at most `drain_budget` commands per
//!   callback, oldest first, so a flood cannot blow the deadline.
//! * **Every command gets exactly one answer.** A command is popped only when the reply queue
//!   has a free slot for its answer; transport telemetry is pushed only when that leaves room
//!   for the answers the rest of this callback's budget could need. So an ack always fits, and
//!   when replies back up the commands stay queued (TCP back-pressure upstream): nothing is
//!   lost. Only telemetry is dropped, and drops are counted.
//! * **Meters** accumulate wait-free into per-channel atomics (peak-hold, Σx², sample count),
//!   handed over to the network side at its rate — see [`meters`] for the protocol.
//! * **Taps** (opt-in, [`RtConfig::with_taps`]) keep the most recent samples of tapped
//!   signals in fixed rings the audio thread overwrites ([`AudioEndpoint::publish_tap`]); a
//!   [`TapReader`] (from [`NetEndpoint::take_taps`]) copies them out and learns how many it
//!   missed — see [`tap`] for the protocol.
//! * **Analysis mailboxes** ([`analysis`], not touched by the audio thread): the engine's
//!   analysis worker reads what the sessions subscribed (`scope`, `spectrum`) from a request
//!   table and hands back computed float arrays through latest-value triple buffers; the
//!   network thread takes the freshest when a frame is due. Wait-free both ways, fixed buffers.
//! * **Health** counters are single-writer atomics in a cache-padded block — see
//!   [`HealthSnapshot`] for what may be stale.
//! * **Wake-up policy.** The host passes each callback's start time in; the network side reads
//!   [`NetEndpoint::next_callback_end_ns`] and sleeps until just after it. The endpoint never
//!   reads a clock.
//!
//! The message types ([`RtCommand`], [`RtReply`], …) are plain `Copy` data and are available
//! without `std`.

mod types;
pub use types::{
    Outcome, RejectReason, RtCommand, RtOp, RtReply, TransportState, MAX_METER_CHANNELS,
};

#[cfg(feature = "std")]
mod clock_sync;
#[cfg(feature = "std")]
mod endpoint;
#[cfg(feature = "std")]
mod health;
#[cfg(feature = "std")]
pub mod meters;
#[cfg(feature = "std")]
mod sync;
#[cfg(feature = "rt-wake")]
mod wake;

#[cfg(feature = "std")]
pub use endpoint::{bridge, AudioEndpoint, NetEndpoint, RtConfig};
#[cfg(feature = "std")]
pub use health::HealthSnapshot;
#[cfg(all(feature = "std", loom))]
#[doc(hidden)]
pub use health::LoomHealth;

#[cfg(feature = "rt-guard")]
pub mod guard;

#[cfg(feature = "std")]
pub mod analysis;
#[cfg(feature = "std")]
pub mod tap;
#[cfg(feature = "std")]
pub use tap::{TapError, TapRead, TapReader, MAX_TAPS};
