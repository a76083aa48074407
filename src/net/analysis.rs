//! The analysis streams (`scope`, `spectrum`) on the network side: the engine's worker handle
//! ([`AnalysisWorker`]) and the network thread's part ([`AnalysisHub`]): keep the request table
//! equal to the union of the open sessions' analysis subscriptions, and send a session the
//! freshest value when its frame is due.
//!
//! The mailboxes themselves are [`rt::analysis`](crate::rt::analysis): wait-free, fixed
//! buffers, no queue. The worker never blocks the network thread and the network thread never
//! blocks the worker; the audio thread is not involved (it only fills the taps).

use crate::message::MAX_ANALYSIS_SUBS;
use crate::rt::analysis::{
    AnalysisFrame, AnalysisKey, AnalysisReader, AnalysisRequest, AnalysisWriter, SubmitError,
    MAX_ANALYSIS_SLOTS,
};
use crate::session::{AnalysisData, AnalysisSendError, Session};

/// The engine's analysis worker handle (from
/// [`ServerBuilder::analysis_worker`](super::ServerBuilder::analysis_worker)): tells what to
/// compute, takes what was computed.
///
/// For one non-real-time thread (its methods that change it take `&mut self`). Never blocks,
/// no system call, no allocation: [`submit`](Self::submit) only replaces a mailbox's value, and
/// the network thread takes it when the frame is due (it does not need waking: a due frame
/// without a value is looked at again a quarter of its interval later). Not for the audio
/// thread all the same: `submit` copies up to 4 096 floats.
///
/// A worker loop, in outline (the complete one is `examples/signal/analysis.rs`):
///
/// ```no_run
/// # use loophole_ipc::net::{AnalysisWorker, Server};
/// # use loophole_ipc::rt::analysis::{AnalysisFrame, AnalysisStream};
/// # fn compute(_: AnalysisStream, _: u16, _: u16, _: &mut [f32]) -> u64 { 0 }
/// # let mut builder = Server::builder();
/// let mut worker: AnalysisWorker = builder.analysis_worker(2).expect("event loop");
/// // (spawn the server with `builder`, move `worker` and a `TapReader` to a thread)
/// let mut values = vec![0.0f32; loophole_ipc::rt::analysis::MAX_ANALYSIS_VALUES];
/// while worker.is_connected() {
///     let requests: Vec<_> = worker.requests().collect();
///     for req in requests {
///         let out = &mut values[..req.values()];
///         let sample = compute(req.stream, req.tap, req.size, out);
///         let frame = AnalysisFrame { sample, missed: 0, param: 48_000, values: out };
///         let _ = worker.submit(&req, &frame); // Stale: the request changed; fine
///     }
///     std::thread::sleep(std::time::Duration::from_millis(10));
/// }
/// ```
#[derive(Debug)]
pub struct AnalysisWorker {
    writer: AnalysisWriter,
}

impl AnalysisWorker {
    pub(super) fn new(writer: AnalysisWriter) -> Self {
        Self { writer }
    }

    /// The requests to serve now: the union of the open sessions' `scope`/`spectrum`
    /// subscriptions, one per (stream, tap, size), at the fastest subscriber's rate. Stale as
    /// soon as read (see [`AnalysisWriter::requests`]).
    pub fn requests(&self) -> impl Iterator<Item = AnalysisRequest> + '_ {
        self.writer.requests()
    }

    /// Whether the network thread still exists (false after the server stopped).
    pub fn is_connected(&self) -> bool {
        self.writer.is_connected()
    }

    /// Replaces the value of `req`'s slot (the network thread sends it with the next due frame
    /// of every session subscribed to it). Wait-free; no system call, no allocation.
    pub fn submit(
        &mut self,
        req: &AnalysisRequest,
        frame: &AnalysisFrame<'_>,
    ) -> Result<(), SubmitError> {
        self.writer.submit(req, frame)
    }
}

/// Keys wanted in one pass, with the fastest rate asked for each.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// Keys beyond the table's slots are not served (one controlling session holds at most
    /// `MAX_ANALYSIS_SUBS` = the slot count; only sessions that stopped being served add more).
    keys: [Option<(AnalysisKey, u8)>; MAX_ANALYSIS_SLOTS],
}

impl Wanted {
    /// Adds `key` at `rate_hz` (the fastest rate wins for a key several sessions share).
    pub(crate) fn add(&mut self, key: AnalysisKey, rate_hz: u8) {
        for entry in &mut self.keys {
            match entry {
                Some((k, r)) if *k == key => {
                    *r = (*r).max(rate_hz);
                    return;
                }
                None => {
                    *entry = Some((key, rate_hz));
                    return;
                }
                Some(_) => {}
            }
        }
    }

    fn rate_of(&self, key: AnalysisKey) -> Option<u8> {
        self.keys
            .iter()
            .flatten()
            .find(|(k, _)| *k == key)
            .map(|&(_, r)| r)
    }
}

/// The network thread's part. Created at spawn when the engine asked for a worker; all its
/// memory comes from [`analysis_bank`](crate::rt::analysis::analysis_bank).
#[derive(Debug)]
pub(crate) struct AnalysisHub {
    reader: AnalysisReader,
    /// Per slot: the value last sent, by connection key, seq and window (`sample`), so a
    /// session is sent neither the same value twice nor the same window again when the worker
    /// recomputed it (the tap had nothing new: blocks longer than the frame interval).
    sent: [Sent; MAX_ANALYSIS_SLOTS],
}

impl AnalysisHub {
    pub(crate) fn new(reader: AnalysisReader) -> Self {
        Self {
            reader,
            sent: [Sent::NONE; MAX_ANALYSIS_SLOTS],
        }
    }

    /// Makes the request table the union `wanted`: keys kept keep their slot (and their values),
    /// keys gone free theirs, new keys take free slots. Bounded: slots × slots comparisons.
    pub(crate) fn reconcile(&mut self, wanted: &Wanted) {
        // Keep or drop what is there.
        for slot in 0..MAX_ANALYSIS_SLOTS {
            if let Some(r) = self.reader.request(slot) {
                let key = r.key();
                let want = wanted.rate_of(key).map(|rate| (key, rate));
                self.reader.set(slot, want);
            }
        }
        // Add what is new.
        for &(key, rate) in wanted.keys.iter().flatten() {
            if self.reader.slot_of(key).is_some() {
                continue;
            }
            if let Some(slot) = (0..MAX_ANALYSIS_SLOTS).find(|&s| self.reader.request(s).is_none())
            {
                self.reader.set(slot, Some((key, rate)));
                self.sent[slot] = Sent::NONE;
            }
        }
    }

    /// The value for `key` that connection `conn` has not been sent yet, if the worker has one
    /// and it is of a window `conn` was not sent (envelope.md, "Rate and freshness"). Call
    /// [`mark_sent`](Self::mark_sent) once it went out.
    pub(crate) fn fresh_for(&mut self, conn: u64, key: AnalysisKey) -> Option<Fresh<'_>> {
        let slot = self.reader.slot_of(key)?;
        let sent = self.sent[slot];
        let value = self.reader.take(slot)?;
        if sent.conn == conn && (sent.seq == value.seq || sent.sample == value.sample) {
            return None;
        }
        Some(Fresh {
            slot,
            seq: value.seq,
            frame: AnalysisFrame {
                sample: value.sample,
                missed: value.missed,
                param: value.param,
                values: value.values,
            },
        })
    }

    /// Records that connection `conn` got value `seq` of `slot`, the window ending at `sample`.
    pub(crate) fn mark_sent(&mut self, conn: u64, slot: usize, seq: u64, sample: u64) {
        if let Some(s) = self.sent.get_mut(slot) {
            *s = Sent { conn, seq, sample };
        }
    }
}

/// What a slot last sent, and to whom ([`AnalysisHub::mark_sent`]).
#[derive(Clone, Copy, Debug)]
struct Sent {
    conn: u64,
    seq: u64,
    sample: u64,
}

impl Sent {
    /// Nothing sent yet (no connection has key `u64::MAX`).
    const NONE: Self = Self {
        conn: u64::MAX,
        seq: 0,
        sample: 0,
    };
}

/// A value not yet sent to a connection ([`AnalysisHub::fresh_for`]).
#[derive(Debug)]
pub(crate) struct Fresh<'a> {
    pub(crate) slot: usize,
    pub(crate) seq: u64,
    pub(crate) frame: AnalysisFrame<'a>,
}

/// How long a due frame whose value is not there yet waits before it is looked at again (ns):
/// a quarter of its interval (envelope.md, "Rate and freshness"); at most 60 Hz, so ≥ 4.1 ms.
fn retry_ns(rate_hz: u16) -> u64 {
    1_000_000_000 / 4 / u64::from(rate_hz.max(1))
}

/// Adds the analysis subscriptions of `session` to `wanted`, if it is still served (OPEN and
/// not stopping): a closing session lingering for its flush must not hold slots a new
/// controller needs, nor keep the worker computing for it.
pub(crate) fn want<I, O>(session: &Session<I, O>, wanted: &mut Wanted)
where
    I: AsRef<[u8]> + AsMut<[u8]>,
    O: AsRef<[u8]> + AsMut<[u8]>,
{
    if !session.analysis_served() {
        return;
    }
    for s in session.analysis_subs() {
        let rate = u8::try_from(s.rate_hz).unwrap_or(u8::MAX);
        wanted.add(s.key, rate);
    }
}

/// Sends `session` (connection `conn`) every analysis frame that is due and has a value it was
/// not sent yet; a due frame without one is put off by a quarter of its interval
/// ([`retry_ns`]), so the thread never polls in a loop for it. Allocates nothing.
pub(crate) fn send_due<I, O>(
    session: &mut Session<I, O>,
    conn: u64,
    hub: &mut AnalysisHub,
    now: u64,
) where
    I: AsRef<[u8]> + AsMut<[u8]>,
    O: AsRef<[u8]> + AsMut<[u8]>,
{
    let mut due = [None::<(AnalysisKey, u64)>; MAX_ANALYSIS_SUBS];
    let subs = session.analysis_subs().map(|s| (s.key, s.rate_hz));
    for (entry, (sub, rate)) in due.iter_mut().zip(subs) {
        *entry = Some((sub, retry_ns(rate)));
    }
    for (sub, retry) in due.into_iter().flatten() {
        if !session.analysis_due(now).any(|d| d == sub) {
            continue;
        }
        let Some(fresh) = hub.fresh_for(conn, sub) else {
            session.defer_analysis(sub, now.saturating_add(retry));
            continue;
        };
        let (slot, seq) = (fresh.slot, fresh.seq);
        let f = fresh.frame;
        let sample = f.sample;
        let data = AnalysisData {
            sample: f.sample,
            missed: f.missed,
            samples_per_point: f.param,
            sample_rate: f.param,
            values: f.values,
        };
        match session.send_analysis(sub, &data, now) {
            // Shed: that value is gone for this session (counted); the next one comes fresh.
            Ok(()) | Err(AnalysisSendError::Shed) => hub.mark_sent(conn, slot, seq, sample),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::analysis::{analysis_bank, AnalysisStream};

    fn key(stream: AnalysisStream, tap: u16, size: u16) -> AnalysisKey {
        AnalysisKey { stream, tap, size }
    }

    #[test]
    fn the_table_follows_the_union_and_keeps_slots_of_kept_keys() {
        let (w, r) = analysis_bank();
        let mut hub = AnalysisHub::new(r);
        let a = key(AnalysisStream::Scope, 0, 512);
        let b = key(AnalysisStream::Spectrum, 1, 1024);
        let mut wanted = Wanted::default();
        wanted.add(a, 30);
        wanted.add(b, 10);
        wanted.add(b, 60); // a second session, faster
        hub.reconcile(&wanted);
        let reqs: Vec<_> = w.requests().collect();
        assert_eq!(reqs.len(), 2);
        let slot_b = hub.reader.slot_of(b).unwrap();
        assert_eq!(hub.reader.request(slot_b).unwrap().rate_hz, 60);
        // `a` goes away, `b` stays in its slot with the same generation.
        let gen_b = hub.reader.request(slot_b).unwrap().generation;
        let mut wanted = Wanted::default();
        wanted.add(b, 60);
        hub.reconcile(&wanted);
        assert_eq!(hub.reader.slot_of(a), None);
        assert_eq!(hub.reader.slot_of(b), Some(slot_b));
        assert_eq!(hub.reader.request(slot_b).unwrap().generation, gen_b);
        assert_eq!(w.requests().count(), 1);
        // Nothing wanted: an empty table.
        hub.reconcile(&Wanted::default());
        assert_eq!(w.requests().count(), 0);
    }

    #[test]
    fn more_keys_than_slots_are_not_served() {
        let (w, r) = analysis_bank();
        let mut hub = AnalysisHub::new(r);
        let mut wanted = Wanted::default();
        for tap in 0..(MAX_ANALYSIS_SLOTS as u16 + 2) {
            wanted.add(key(AnalysisStream::Scope, tap, 16), 30);
        }
        hub.reconcile(&wanted);
        assert_eq!(w.requests().count(), MAX_ANALYSIS_SLOTS);
    }

    struct NoRoutes;
    impl crate::session::Driver for NoRoutes {
        fn claim(&mut self) -> bool {
            true
        }
        fn release(&mut self) {}
        fn route_audio(
            &mut self,
            _: u32,
            _: &crate::message::Command,
        ) -> Result<(), crate::session::RouteFull> {
            Ok(())
        }
        fn route_control(
            &mut self,
            _: u32,
            _: &crate::message::Command,
        ) -> Result<(), crate::session::RouteError> {
            Ok(())
        }
        fn snapshot(&mut self) -> (crate::message::TransportState, crate::message::Health) {
            Default::default()
        }
    }

    /// An open session subscribed to a 16-bin spectrum of tap 0 at 30 Hz.
    fn subscribed_session() -> Session<Vec<u8>, Vec<u8>> {
        use crate::message::{encode_frame, Hello, SubscribeAnalysis, Welcome};
        let welcome = Welcome {
            protocol: crate::message::PROTOCOL_VERSION,
            engine: heapless::String::try_from("test").unwrap(),
            instance: heapless::String::try_from("0123456789abcdef").unwrap(),
            sample_rate: 48_000,
            block_size: 128,
            max_frame: 65_536,
            heartbeat_ms: 0,
            timeout_ms: 0,
            attachments: false,
            taps: 0,
        };
        let cfg = crate::session::SessionConfig {
            max_frame: 65_536,
            handshake_timeout: 1_000_000_000,
            heartbeat_interval: 1_000_000_000,
            heartbeat_timeout: 10_000_000_000,
            slow_consumer_timeout: 10_000_000_000,
            token: None,
            welcome: &welcome,
            taps: 1,
            attachments: false,
        };
        let mut s = Session::new(&cfg, vec![0u8; 70_000], vec![0u8; 256 * 1024], 0).unwrap();
        let mut bytes = crate::frame::PREFACE.to_vec();
        let mut buf = [0u8; 512];
        let hello = Hello {
            protocol: crate::message::PROTOCOL_VERSION,
            client: heapless::String::try_from("t").unwrap(),
            token: None,
            attachments: false,
        };
        let n = encode_frame(Some(1), &hello, &mut buf, u32::MAX).unwrap();
        bytes.extend_from_slice(&buf[..n]);
        let sub = SubscribeAnalysis {
            stream: AnalysisStream::Spectrum,
            tap: 0,
            size: 16,
            rate_hz: 30,
        };
        let n = encode_frame(Some(2), &sub, &mut buf, u32::MAX).unwrap();
        bytes.extend_from_slice(&buf[..n]);
        s.rx_space()[..bytes.len()].copy_from_slice(&bytes);
        s.rx_commit(bytes.len());
        s.poll(1, &mut NoRoutes);
        let pending = s.tx_pending().len();
        s.tx_consumed(pending, 1);
        assert_eq!(s.analysis_subs().count(), 1);
        s
    }

    /// A session that stopped being served (here: the server's stop, `Session::shutdown`)
    /// wants no slot any more, so a closing session lingering for its flush cannot hold the
    /// table's slots against a new controller. Negative control: the same session before.
    #[test]
    fn a_session_no_longer_served_wants_no_slot() {
        let (w, r) = analysis_bank();
        let mut hub = AnalysisHub::new(r);
        let mut s = subscribed_session();
        let mut wanted = Wanted::default();
        want(&s, &mut wanted);
        hub.reconcile(&wanted);
        assert_eq!(w.requests().count(), 1, "an open session's key is served");
        s.shutdown(2);
        assert!(!s.analysis_served());
        assert_eq!(s.analysis_subs().count(), 1, "still listed");
        let mut wanted = Wanted::default();
        want(&s, &mut wanted);
        hub.reconcile(&wanted);
        assert_eq!(w.requests().count(), 0, "its slot is freed");
    }

    /// A due frame whose value the worker has not computed yet is put off: the session's next
    /// deadline moves into the future, so the network thread does not poll in a loop. Before
    /// the deferral (`Session::defer_analysis`), `poll_at` stayed at the due time, in the past.
    #[test]
    fn a_due_frame_without_a_value_is_deferred_not_spun_on() {
        let (mut w, r) = analysis_bank();
        let mut hub = AnalysisHub::new(r);
        let mut s = subscribed_session();
        let mut wanted = Wanted::default();
        want(&s, &mut wanted);
        hub.reconcile(&wanted);
        let now = 10_000_000;
        // Negative control: the frame is due and the session's deadline is in the past.
        assert_eq!(s.analysis_due(now).count(), 1);
        assert!(s.poll_at().unwrap() <= now);
        send_due(&mut s, 7, &mut hub, now);
        assert!(s.tx_pending().is_empty(), "nothing to send yet");
        assert!(s.poll_at().unwrap() >= now + retry_ns(30), "would spin");
        assert_eq!(s.analysis_due(now).count(), 0);
        // Once the worker has a value, the next due frame carries it, once.
        let req = w.requests().next().unwrap();
        let frame = AnalysisFrame {
            sample: 1234,
            missed: 0,
            param: 48_000,
            values: &[-30.0; 16],
        };
        w.submit(&req, &frame).unwrap();
        let later = s.poll_at().unwrap();
        send_due(&mut s, 7, &mut hub, later);
        let sent = s.tx_pending().len();
        assert!(sent > 0);
        assert!(core::str::from_utf8(&s.tx_pending()[8..])
            .unwrap()
            .contains("\"sample\":1234"));
        s.tx_consumed(sent, later);
        // Due again, the same value: not sent twice, deferred instead.
        let again = later + 1_000_000_000;
        send_due(&mut s, 7, &mut hub, again);
        assert!(s.tx_pending().is_empty());
        assert!(s.poll_at().unwrap() > again);
    }

    #[test]
    fn a_value_goes_to_each_connection_once() {
        let (mut w, r) = analysis_bank();
        let mut hub = AnalysisHub::new(r);
        let k = key(AnalysisStream::Spectrum, 0, 16);
        let mut wanted = Wanted::default();
        wanted.add(k, 30);
        hub.reconcile(&wanted);
        assert!(hub.fresh_for(7, k).is_none(), "nothing computed yet");
        let req = w.requests().next().unwrap();
        let frame = AnalysisFrame {
            sample: 99,
            missed: 0,
            param: 48_000,
            values: &[-20.0; 16],
        };
        w.submit(&req, &frame).unwrap();
        let f = hub.fresh_for(7, k).unwrap();
        assert_eq!((f.frame.sample, f.frame.values.len()), (99, 16));
        let (slot, seq) = (f.slot, f.seq);
        hub.mark_sent(7, slot, seq, 99);
        assert!(hub.fresh_for(7, k).is_none(), "already sent to 7");
        assert!(hub.fresh_for(8, k).is_some(), "not yet sent to 8");
        // Recomputed from the same window (no new block reached the tap): a new value, but not
        // a window 7 was not sent.
        w.submit(&req, &frame).unwrap();
        assert!(hub.fresh_for(7, k).is_none(), "the same window again");
        let next = AnalysisFrame {
            sample: 99 + 128,
            ..frame
        };
        w.submit(&req, &next).unwrap();
        let f = hub.fresh_for(7, k).expect("a new window");
        assert_eq!(f.frame.sample, 227);
    }
}
