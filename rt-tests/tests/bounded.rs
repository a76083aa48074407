//! Bounded work and exactly-once answers, deterministically (single thread, no timing).

use loophole_ipc::rt::{
    bridge, Outcome, RejectReason, RtCommand, RtConfig, RtOp, RtReply, TransportState,
};

const TRANSPORT: TransportState = TransportState {
    playing: true,
    position: 0,
    bpm: 120.0,
    loop_start: 0,
    loop_end: 0,
    loop_enabled: false,
};

/// One answer as seen by the network side: (callback index it was handled in, reply).
type Log = Vec<(usize, RtReply)>;

/// Checks a reply log against the sent ids: every id answered exactly once, in order, at most
/// `bound` answers per callback. Returns a description of the first violation.
fn check(sent: &[u32], log: &Log, bound: usize) -> Result<(), String> {
    let answers: Vec<(usize, u32)> = log
        .iter()
        .filter_map(|(cb, r)| r.answers().map(|id| (*cb, id)))
        .collect();
    if answers.len() != sent.len() {
        return Err(format!(
            "{} answers for {} commands",
            answers.len(),
            sent.len()
        ));
    }
    for (i, (&(_, got), &want)) in answers.iter().zip(sent).enumerate() {
        if got != want {
            return Err(format!("answer #{i} is for id {got}, expected {want}"));
        }
    }
    let mut per_cb = std::collections::HashMap::new();
    for (cb, _) in &answers {
        *per_cb.entry(*cb).or_insert(0usize) += 1;
    }
    match per_cb.iter().find(|(_, &n)| n > bound) {
        Some((cb, n)) => Err(format!("callback {cb} handled {n} > {bound}")),
        None => Ok(()),
    }
}

fn engine(cmd: &RtCommand) -> Outcome {
    match cmd.op {
        RtOp::ParamSet { node, .. } if node >= 8 => Outcome::Rejected(RejectReason::UnknownNode),
        RtOp::Seek { .. } => Outcome::AppliedAt { offset: 5 },
        _ => Outcome::Applied,
    }
}

fn command(id: u32) -> RtCommand {
    let op = match id % 4 {
        0 => RtOp::ParamSet {
            node: id % 10,
            param: 1,
            value: 0.25,
            ramp_ms: 0.0,
        },
        1 => RtOp::Seek { position: 10 },
        2 => RtOp::Ping { nonce: id },
        _ => RtOp::Play,
    };
    RtCommand { id, op }
}

/// Runs `n` commands through a bridge with budget `bound`, reading replies after each
/// callback; the reply queue is read only every `read_every` callbacks.
fn flood(n: u32, bound: usize, reply_capacity: usize, read_every: usize) -> (Vec<u32>, Log, usize) {
    let mut cfg = RtConfig::default();
    cfg.command_capacity = n as usize;
    cfg.drain_budget = bound;
    cfg.reply_capacity = reply_capacity;
    let (mut audio, mut net) = bridge(&cfg);
    let sent: Vec<u32> = (0..n).collect();
    for &id in &sent {
        net.try_send(command(id)).expect("capacity n");
    }
    assert_eq!(
        net.try_send(command(n)),
        Err(command(n)),
        "full queue gives the command back"
    );
    let mut log = Log::new();
    let mut cb = 0;
    while net.commands_in_flight() > 0 && cb < 100_000 {
        audio.begin_callback(cb as u64 * 1_000_000, 64);
        let block_start = audio.block_start();
        let handled = audio.drain(engine);
        assert!(handled <= bound);
        audio.publish_transport(&TRANSPORT);
        audio.end_callback(cb as u64 * 1_000_000 + 10_000);
        if cb % read_every == 0 {
            while let Some(r) = net.pop_reply() {
                if let RtReply::Ack { sample, id } = r {
                    let off = if id % 4 == 1 { 5 } else { 0 };
                    // Replies popped now may come from earlier callbacks: sample <= this block.
                    assert!(sample <= block_start + off);
                    assert_eq!(sample % 64, off, "ack sample = block start + offset");
                }
                log.push((cb, r));
            }
        }
        cb += 1;
    }
    (sent, log, cb)
}

#[test]
fn flood_is_applied_in_bounded_ordered_batches_with_one_answer_each() {
    let bound = 7;
    let (sent, log, callbacks) = flood(1000, bound, 512, 1);
    check(&sent, &log, bound).unwrap();
    assert_eq!(
        callbacks,
        1000usize.div_ceil(bound),
        "exactly ceil(n/bound) callbacks"
    );
    // Kinds are right.
    for (_, r) in &log {
        match r {
            RtReply::Reject { id, reason } => {
                assert!(id % 4 == 0 && id % 10 >= 8);
                assert_eq!(reason.as_code(), "unknown_node");
            }
            RtReply::Pong { id, nonce, .. } => assert_eq!(id, nonce),
            RtReply::Ack { id, .. } => assert!(id % 4 != 2 && !(id % 4 == 0 && id % 10 >= 8)),
            RtReply::Transport(_) => {}
        }
    }
}

#[test]
fn backed_up_replies_keep_commands_queued_and_lose_nothing() {
    // Reply queue barely larger than one drain; the network side reads only every 50 callbacks.
    let bound = 4;
    let (sent, log, _) = flood(500, bound, 6, 50);
    // Replies are popped in batches here, so the log's callback index is the pop's: the
    // per-callback bound is asserted inside `flood` on `drain`'s return value instead.
    check(&sent, &log, usize::MAX).unwrap();
    let telemetry = log.iter().filter(|(_, r)| r.answers().is_none()).count();
    assert!(
        telemetry > 0,
        "telemetry should still get through when there is room"
    );
}

#[test]
fn telemetry_never_takes_the_room_an_answer_needs() {
    let mut cfg = RtConfig::default();
    cfg.drain_budget = 4;
    cfg.reply_capacity = 5; // budget + 1
    let (mut audio, mut net) = bridge(&cfg);
    // Telemetry first in the callback: only pushed if 4 answer slots stay free.
    audio.begin_callback(0, 64);
    assert!(audio.publish_transport(&TRANSPORT));
    assert!(
        !audio.publish_transport(&TRANSPORT),
        "second would eat an answer's slot"
    );
    for id in 0..4 {
        net.try_send(command(id * 4 + 3)).unwrap();
    }
    assert_eq!(audio.drain(engine), 4, "all four answers fit");
    audio.end_callback(1000);
    let h = net.health();
    assert_eq!(h.telemetry_dropped, 1);
    assert_eq!(h.reply_queue_high, 5);
    // Queue full: the next callback pops nothing and counts a stall.
    net.try_send(command(99)).unwrap();
    audio.begin_callback(2000, 64);
    assert_eq!(audio.drain(engine), 0);
    audio.end_callback(3000);
    assert_eq!(net.health().reply_stalls, 1);
    assert_eq!(net.health().cmd_queue_len, 1, "the command stayed queued");
    assert_eq!(net.commands_in_flight(), 5);
    let mut answers = 0;
    while let Some(r) = net.pop_reply() {
        answers += usize::from(r.answers().is_some());
    }
    assert_eq!(answers, 4);
    audio.begin_callback(4000, 64);
    assert_eq!(audio.drain(engine), 1);
    audio.end_callback(5000);
    assert!(matches!(net.pop_reply(), Some(RtReply::Ack { id: 99, .. })));
    assert_eq!(net.commands_in_flight(), 0);
}

#[test]
fn budget_is_per_callback_across_drain_calls() {
    let mut cfg = RtConfig::default();
    cfg.drain_budget = 3;
    let (mut audio, mut net) = bridge(&cfg);
    for id in 0..10 {
        net.try_send(command(id * 4 + 3)).unwrap();
    }
    audio.begin_callback(0, 64);
    assert_eq!(audio.drain(engine), 3);
    assert_eq!(audio.drain(engine), 0, "budget spent");
    audio.end_callback(1);
    audio.begin_callback(2, 64);
    assert_eq!(audio.drain(engine), 3);
    audio.end_callback(3);
}

#[test]
fn health_and_wakeup_prediction() {
    let mut cfg = RtConfig::default();
    cfg.sample_rate = 48_000;
    let (mut audio, net) = bridge(&cfg);
    assert_eq!(net.next_callback_end_ns(), None);
    // 480 frames at 48 kHz = 10 ms period; the callback takes 2.5 ms.
    audio.begin_callback(1_000_000_000, 480);
    audio.report_xrun();
    audio.end_callback(1_002_500_000);
    let h = net.health();
    assert_eq!((h.callbacks, h.xruns, h.sample_clock), (1, 1, 480));
    assert!((h.dsp_load - 0.25).abs() < 1e-6);
    // These host times are not this crate's clock: the prediction comes in the network side's
    // clock, shifted by the offset it learned from the looks (see `host_clock_offset_ns`).
    let local = net.next_callback_end_ns().expect("a callback ran");
    let offset = net.host_clock_offset_ns().0;
    assert_ne!(offset, 0, "host times of 1 s are not this process's clock");
    let host = |local: u64| local.wrapping_add_signed(-offset);
    assert_eq!(host(local), 1_000_000_000 + 10_000_000 + 2_500_000);
    // Woken late by 25 ms: projected by whole periods.
    assert_eq!(
        net.next_callback_end_after(1_040_000_000u64.wrapping_add_signed(offset))
            .map(host),
        Some(1_012_500_000 + 3 * 10_000_000)
    );
    assert_eq!(
        net.host_clock_offset_ns().0,
        offset,
        "one end seen: no news"
    );
    audio.begin_callback(1_010_000_000, 480);
    audio.end_callback(1_019_000_000);
    let h = net.health();
    assert!((h.dsp_load - 0.9).abs() < 1e-6 && (h.dsp_load_max - 0.9).abs() < 1e-6);
}

#[test]
fn dsp_load_interval_max_is_exact_per_interval() {
    let (mut audio, mut net) = bridge(&RtConfig::default().with_sample_rate(48_000));
    let mut t = 0u64;
    let mut callback = |audio: &mut loophole_ipc::rt::AudioEndpoint, load_percent: u64| {
        audio.begin_callback(t, 480); // 10 ms period
        audio.end_callback(t + load_percent * 100_000);
        t += 10_000_000;
    };
    // Collect at every wake-up (after each callback) keeps the interval one callback fresh.
    assert_eq!(
        net.take_dsp_load_max(),
        Some(0.0),
        "empty interval before any callback"
    );
    assert_eq!(net.take_dsp_load_max(), None, "nothing completed since");
    callback(&mut audio, 50);
    net.collect_meters();
    callback(&mut audio, 90);
    net.collect_meters();
    callback(&mut audio, 20);
    net.collect_meters();
    // Interval: callbacks 1 and 2 completed (3 is still in the writer's bank).
    assert_eq!(net.take_dsp_load_max(), Some(0.9));
    callback(&mut audio, 30);
    assert_eq!(
        net.take_dsp_load_max(),
        Some(0.2),
        "callback 3 (4 is in the writer's bank)"
    );
    callback(&mut audio, 10);
    assert_eq!(net.take_dsp_load_max(), Some(0.3), "callback 4, not lost");
    assert!(
        (net.health().dsp_load_max - 0.9).abs() < 1e-6,
        "all-time max unchanged"
    );
}

/// Negative control: the checker really rejects each kind of violation.
#[test]
fn checker_catches_lost_duplicated_reordered_and_unbounded_answers() {
    let ack = |id| RtReply::Ack { id, sample: 0 };
    let sent = [0, 1, 2];
    let good: Log = vec![(0, ack(0)), (0, ack(1)), (1, ack(2))];
    assert!(check(&sent, &good, 2).is_ok());
    let lost: Log = vec![(0, ack(0)), (1, ack(2))];
    assert!(check(&sent, &lost, 2).is_err());
    let dup: Log = vec![(0, ack(0)), (0, ack(1)), (1, ack(1)), (1, ack(2))];
    assert!(check(&sent, &dup, 2).is_err());
    let reordered: Log = vec![(0, ack(1)), (0, ack(0)), (1, ack(2))];
    assert!(check(&sent, &reordered, 2).is_err());
    assert!(
        check(&sent, &good, 1).is_err(),
        "2 in one callback > bound 1"
    );
}

/// Control for the `compile_fail` doctests (which show the endpoints are not `Sync`): the same
/// shape with `Send` compiles, so those doctests fail for the `Sync` bound and nothing else.
#[test]
fn endpoints_are_send() {
    fn sent<T: Send>(_: &T) {}
    let (audio, net) = bridge(&Default::default());
    sent(&audio);
    sent(&net);
}
