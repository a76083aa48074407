//! Property test: random interleavings of sends, callbacks (with telemetry before/after the
//! drain, several drain calls) and reply pops, on random capacities and budgets. Single thread,
//! so each step's effect is exact.

use loophole_ipc::rt::{
    bridge, NetEndpoint, Outcome, RejectReason, RtCommand, RtConfig, RtOp, RtReply, TransportState,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Send(usize),
    Callback {
        telemetry_first: bool,
        drains: usize,
        telemetry_after: bool,
    },
    Pop(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..40).prop_map(Step::Send),
        (any::<bool>(), 0usize..3, any::<bool>()).prop_map(
            |(telemetry_first, drains, telemetry_after)| {
                Step::Callback {
                    telemetry_first,
                    drains,
                    telemetry_after,
                }
            }
        ),
        (0usize..40).prop_map(Step::Pop),
    ]
}

const T: TransportState = TransportState {
    playing: false,
    position: 0,
    bpm: 90.0,
    loop_start: 0,
    loop_end: 0,
    loop_enabled: false,
};

fn engine(cmd: &RtCommand) -> Outcome {
    if cmd.id.is_multiple_of(3) {
        Outcome::Rejected(RejectReason::Unsupported)
    } else {
        Outcome::Applied
    }
}

struct Net {
    net: NetEndpoint,
    next_send: u32,
    next_answer: u32,
}

impl Net {
    fn pop(&mut self, max: usize) -> Result<(), TestCaseError> {
        for _ in 0..max {
            let Some(r) = self.net.pop_reply() else { break };
            if let Some(id) = r.answers() {
                prop_assert_eq!(
                    id,
                    self.next_answer,
                    "answers in order, none lost or repeated"
                );
                let ok = match r {
                    RtReply::Reject { .. } => id % 3 == 0,
                    RtReply::Ack { .. } => id % 3 != 0,
                    _ => false,
                };
                prop_assert!(ok, "wrong kind {:?}", r);
                self.next_answer += 1;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_interleaving_answers_everything_once_within_budget(
        cmd_cap in 1usize..64, reply_cap in 1usize..64, budget in 1usize..20,
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let cfg = RtConfig::default()
            .with_command_capacity(cmd_cap)
            .with_reply_capacity(reply_cap)
            .with_drain_budget(budget);
        let (mut audio, net) = bridge(&cfg);
        let mut n = Net { net, next_send: 0, next_answer: 0 };
        let mut now = 0u64;
        let run_callback = |audio: &mut loophole_ipc::rt::AudioEndpoint, n: &mut Net, now: &mut u64,
                                tf: bool, drains: usize, ta: bool| -> Result<(), TestCaseError> {
            *now += 1000;
            audio.begin_callback(*now, 32);
            let queued = n.net.health().cmd_queue_len;
            let pushed_first = tf && audio.publish_transport(&T);
            let mut handled = 0;
            for _ in 0..drains {
                handled += audio.drain(engine);
            }
            prop_assert!(handled <= budget, "budget exceeded");
            if pushed_first && drains > 0 {
                // Telemetry pushed before the drain left room for the whole budget.
                prop_assert_eq!(handled, queued.min(budget), "telemetry took an answer's room");
            }
            if ta {
                audio.publish_transport(&T);
            }
            audio.end_callback(*now + 100);
            Ok(())
        };
        for s in steps {
            match s {
                Step::Send(k) => {
                    for _ in 0..k {
                        let cmd = RtCommand { id: n.next_send, op: RtOp::Tempo { bpm: 100.0 } };
                        match n.net.try_send(cmd) {
                            Ok(()) => n.next_send += 1,
                            Err(back) => { prop_assert_eq!(back, cmd); break; }
                        }
                    }
                }
                Step::Callback { telemetry_first, drains, telemetry_after } => {
                    run_callback(&mut audio, &mut n, &mut now, telemetry_first, drains, telemetry_after)?;
                }
                Step::Pop(k) => n.pop(k)?,
            }
        }
        // Flush: everything sent is eventually answered exactly once.
        for _ in 0..(cmd_cap + 2) {
            run_callback(&mut audio, &mut n, &mut now, false, 1, false)?;
            n.pop(usize::MAX)?;
        }
        prop_assert_eq!(n.net.commands_in_flight(), 0);
        prop_assert_eq!(n.next_answer, n.next_send);
    }
}
