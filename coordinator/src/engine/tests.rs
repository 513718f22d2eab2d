//! Engine tests over a gated executor: the test decides when each step runs (no sleeps), so it
//! can check what the step right after an abort, a dropped stream or a passed deadline carries.

use super::*;
use crate::scheduler::{FakeWorker, SchedulerConfig, SchedulerOutput, StepOutput};
use crate::validation::ValidSampling;
use bitnet_proto::worker::SamplingState;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;
use tokio::sync::mpsc::unbounded_channel;

const BLOCKS: usize = 64;

/// A [`FakeWorker`] that reports every step it is given and waits for a go before each.
struct Gated {
    worker: FakeWorker,
    steps: SyncSender<SchedulerOutput>,
    go: Receiver<()>,
}

impl Executor for Gated {
    fn register(&mut self, _: SeqId, _: SamplingState) -> Result<(), ExecutorError> {
        Ok(())
    }
    fn step(&mut self, out: &SchedulerOutput) -> Result<StepOutput, ExecutorError> {
        self.go.recv().map_err(|_| ExecutorError::Rank {
            step: out.step_id,
            message: "test over".into(),
        })?;
        let _ = self.steps.send(out.clone());
        self.worker.step(out).map_err(|e| ExecutorError::Rank {
            step: out.step_id,
            message: e.to_string(),
        })
    }
}

struct Harness {
    engine: EngineHandle,
    steps: Receiver<SchedulerOutput>,
    go: SyncSender<()>,
}

impl Harness {
    fn new() -> Self {
        let scheduler = Scheduler::new(SchedulerConfig {
            num_blocks: BLOCKS,
            ..SchedulerConfig::default()
        })
        .unwrap();
        let (steps_tx, steps) = sync_channel(64);
        let (go, go_rx) = sync_channel(64);
        let executor = Gated {
            worker: FakeWorker::new(16, BLOCKS, 1000),
            steps: steps_tx,
            go: go_rx,
        };
        let (engine, _thread) = spawn(scheduler, Box::new(executor), None);
        Self { engine, steps, go }
    }

    /// Lets one step run and returns what it carried.
    fn step(&self) -> SchedulerOutput {
        self.go.send(()).unwrap();
        self.steps.recv_timeout(Duration::from_secs(10)).unwrap()
    }
}

fn request(id: &str, max_tokens: u32) -> ValidRequest {
    ValidRequest {
        request_id: id.into(),
        prompt_ids: (1..40).collect(),
        sampling: ValidSampling {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: Some(1),
            logprobs: None,
        },
        max_tokens,
        min_tokens: 0,
        stop: Vec::new(),
        stop_token_ids: Vec::new(),
        ignore_eos: true,
        n: 1,
    }
}

/// Runs steps until `done` holds for one, returning it (at most `max` steps).
fn step_until(h: &Harness, max: usize, done: impl Fn(&SchedulerOutput) -> bool) -> SchedulerOutput {
    for _ in 0..max {
        let out = h.step();
        if done(&out) {
            return out;
        }
    }
    panic!("no such step within {max}");
}

/// The step in flight when an event happened may still run `seq`; the one after it must tell
/// the workers `seq` ended and not run it.
fn ends_within_one_step(h: &Harness, seq: SeqId) {
    let out = step_until(h, 2, |o| o.finished_seq_ids.contains(&seq));
    assert!(!out.scheduled_ids().any(|s| s == seq), "{out:?}");
}

fn final_reason(rx: &mut tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) -> Option<Finish> {
    let mut reason = None;
    while let Ok(event) = rx.try_recv() {
        if let StreamEvent::Finished { reason: r, .. } = event {
            reason = Some(r);
        }
    }
    reason
}

#[test]
fn abort_drop_and_deadline_end_a_request_at_the_next_step() {
    let h = Harness::new();
    let (a_tx, mut a_rx) = unbounded_channel();
    let (b_tx, b_rx) = unbounded_channel();
    let (c_tx, mut c_rx) = unbounded_channel();
    assert!(h.engine.add(request("a", 500), a_tx, None));
    assert!(h.engine.add(request("b", 500), b_tx, None));
    let soon = Instant::now() + Duration::from_millis(500);
    assert!(h.engine.add(request("c", 500), c_tx, Some(soon)));
    // All three prefill, then decode.
    let first = step_until(&h, 100, |o| o.new_requests.len() == 3);
    let ids: Vec<SeqId> = first.new_requests.iter().map(|r| r.seq_id).collect();
    h.step();
    assert!(
        h.engine.stats().kv_blocks_used >= 9,
        "3 prompts of 39 + 1 tokens"
    );

    h.engine.abort("a");
    ends_within_one_step(&h, ids[0]);
    assert_eq!(final_reason(&mut a_rx), Some(Finish::Abort));

    drop(b_rx);
    ends_within_one_step(&h, ids[1]);

    while Instant::now() < soon {
        std::thread::yield_now();
    }
    ends_within_one_step(&h, ids[2]);
    assert_eq!(final_reason(&mut c_rx), Some(Finish::Deadline));
    // The stats of that step are published once it returns.
    let until = Instant::now() + Duration::from_secs(10);
    while h.engine.stats().kv_blocks_used > 0 {
        assert!(Instant::now() < until, "blocks still used");
        std::thread::yield_now();
    }
    h.engine.shutdown();
}
