//! Scenario tests of the [`Scheduler`] driven by hand-made step outputs or the [`FakeWorker`].

use std::collections::{BTreeMap, HashSet};

use super::*;

const VOCAB: u32 = 1000;

fn config(num_blocks: usize, max_num_seqs: usize, max_batched_tokens: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 16,
        num_blocks,
        max_num_seqs,
        max_batched_tokens,
        max_model_len: 4096,
        eos_token_ids: Vec::new(),
    }
}

fn prompt(id: SeqId, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + id as u32 * 13) % VOCAB)
        .collect()
}

fn req(id: SeqId, len: usize, max_tokens: u32) -> SchedRequest {
    SchedRequest::new(id, prompt(id, len), max_tokens, 0.0)
}

/// Checks the per-step invariants a user would notice breaking.
fn check_step(s: &Scheduler, out: &SchedulerOutput) {
    let cfg = s.config();
    assert!(
        out.num_scheduled_tokens() <= cfg.max_batched_tokens,
        "{out:?}"
    );
    assert!(out.num_seqs() <= cfg.max_num_seqs, "{out:?}");
    assert!(s.num_running() <= cfg.max_num_seqs);
    let ids: Vec<SeqId> = out.scheduled_ids().collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<HashSet<_>>().len(),
        "{out:?}"
    );
    s.block_manager().check_invariants().unwrap();
}

/// Drives `s` with a fake worker until every request ended; returns each request's output
/// tokens and finish reason, and every step's output.
struct Run {
    outputs: BTreeMap<SeqId, (Vec<u32>, FinishReason)>,
    steps: Vec<SchedulerOutput>,
}

fn drive(s: &mut Scheduler, worker: &mut FakeWorker) -> Run {
    let mut outputs = BTreeMap::new();
    let mut partial: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut now = 0.0;
    while s.has_unfinished() {
        now += 0.01;
        let out = s.schedule(now);
        check_step(s, &out);
        assert!(!out.is_empty(), "stalled with work left: {:?}", s.stats());
        let step = worker.step(&out).unwrap();
        for u in s.update(&out, &step).unwrap() {
            partial.entry(u.id).or_default().extend(&u.new_token_ids);
            if let Some(reason) = u.finished {
                outputs.insert(u.id, (partial.remove(&u.id).unwrap(), reason));
            }
        }
        steps.push(out);
        assert!(steps.len() < 100_000, "runaway");
    }
    // Tell the worker about the last endings.
    let last = s.schedule(now);
    worker.step(&last).unwrap();
    assert_eq!(worker.num_seqs(), 0);
    assert_eq!(s.block_manager().num_free_blocks(), s.config().num_blocks);
    Run { outputs, steps }
}

/// The output a request gets alone with plenty of room.
fn solo(r: &SchedRequest, eos: &[u32]) -> (Vec<u32>, FinishReason) {
    let mut cfg = config(1024, 8, 4096);
    cfg.eos_token_ids = eos.to_vec();
    let mut s = Scheduler::new(cfg).unwrap();
    s.add_request(r.clone()).unwrap();
    let mut w = FakeWorker::new(16, 1024, VOCAB);
    drive(&mut s, &mut w).outputs.remove(&r.id).unwrap()
}

#[test]
fn chunked_prefill_splits_a_long_prompt_across_steps() {
    let mut s = Scheduler::new(config(64, 4, 32)).unwrap();
    s.add_request(req(1, 100, 3)).unwrap();
    let mut w = FakeWorker::new(16, 64, VOCAB);

    let o0 = s.schedule(0.0);
    assert_eq!(o0.new_requests.len(), 1);
    let n = &o0.new_requests[0];
    assert_eq!(n.prompt_ids.len(), 100, "the full prompt travels once");
    assert_eq!(
        (n.num_computed, n.num_scheduled, n.block_ids.len()),
        (0, 32, 2)
    );
    let st = w.step(&o0).unwrap();
    assert!(st.tokens.is_empty(), "mid-prefill produces no token");
    assert!(s.update(&o0, &st).unwrap().is_empty());

    let mut chunks = vec![32];
    let mut first_token_step = None;
    for i in 1..10 {
        let o = s.schedule(i as f64);
        if o.is_empty() {
            break;
        }
        assert!(o.new_requests.is_empty());
        let r = &o.running[0];
        assert!(!r.resumed);
        chunks.push(r.num_scheduled);
        let st = w.step(&o).unwrap();
        let ups = s.update(&o, &st).unwrap();
        if !ups.is_empty() && first_token_step.is_none() {
            first_token_step = Some(i);
        }
    }
    assert_eq!(chunks, vec![32, 32, 32, 4, 1, 1]);
    assert_eq!(
        first_token_step,
        Some(3),
        "the first token comes with the last chunk"
    );
    assert!(!s.has_unfinished());
}

#[test]
fn budget_is_shared_between_decodes_and_a_prefill_chunk() {
    let mut s = Scheduler::new(config(128, 8, 40)).unwrap();
    let mut w = FakeWorker::new(16, 128, VOCAB);
    for id in 0..3 {
        s.add_request(req(id, 10, 50)).unwrap();
    }
    let o = s.schedule(0.0);
    assert_eq!(o.num_scheduled_tokens(), 30);
    let st = w.step(&o).unwrap();
    s.update(&o, &st).unwrap();
    s.add_request(req(9, 200, 5)).unwrap();
    let o = s.schedule(1.0);
    check_step(&s, &o);
    assert_eq!(o.running.len(), 3);
    assert!(o.running.iter().all(|r| r.num_scheduled == 1));
    assert_eq!(o.new_requests[0].num_scheduled, 37, "40 - 3 decodes");
    assert_eq!(o.num_scheduled_tokens(), 40);
    let st = w.step(&o).unwrap();
    s.update(&o, &st).unwrap();
    drive(&mut s, &mut w);
}

#[test]
fn admission_is_first_come_first_served_without_overtaking() {
    // max_num_seqs 2: requests 0 and 1 run, 2 and 3 wait in order.
    let mut s = Scheduler::new(config(64, 2, 512)).unwrap();
    let mut w = FakeWorker::new(16, 64, VOCAB);
    s.add_request(req(0, 8, 1)).unwrap();
    s.add_request(req(1, 8, 4)).unwrap();
    s.add_request(req(2, 8, 4)).unwrap();
    s.add_request(req(3, 8, 4)).unwrap();
    let run = drive(&mut s, &mut w);
    let admitted: Vec<SeqId> = run
        .steps
        .iter()
        .flat_map(|o| o.new_requests.iter().map(|n| n.seq_id))
        .collect();
    assert_eq!(admitted, vec![0, 1, 2, 3]);
    assert_eq!(run.steps[0].new_requests.len(), 2);
    assert_eq!(
        run.steps[1].new_requests[0].seq_id, 2,
        "2 takes 0's place at once"
    );

    // A head that does not fit the pool blocks a small one behind it.
    let mut s = Scheduler::new(config(4, 8, 512)).unwrap();
    s.add_request(req(0, 40, 30)).unwrap(); // 3 blocks
    s.add_request(req(1, 40, 5)).unwrap(); // 3 blocks: must wait
    s.add_request(req(2, 4, 5)).unwrap(); // 1 block: fits, but may not overtake
    let o = s.schedule(0.0);
    assert_eq!(o.scheduled_ids().collect::<Vec<_>>(), vec![0]);
    assert_eq!(s.waiting_ids().collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn queue_time_is_measured_from_arrival_to_first_schedule() {
    let mut s = Scheduler::new(config(64, 4, 512)).unwrap();
    s.add_request(SchedRequest::new(1, prompt(1, 5), 2, 10.0))
        .unwrap();
    let o = s.schedule(10.25);
    assert_eq!(o.new_requests[0].queue_time_s, 0.25);
}

#[test]
fn preemption_by_recompute_yields_the_unpressured_output() {
    // 12 blocks of 16 = 192 slots for 4 requests that want up to 40 + 80 each.
    let reqs: Vec<SchedRequest> = (0..4).map(|id| req(id, 40 + id as usize, 80)).collect();
    let mut s = Scheduler::new(config(12, 4, 64)).unwrap();
    for r in &reqs {
        s.add_request(r.clone()).unwrap();
    }
    let mut w = FakeWorker::new(16, 12, VOCAB);
    let run = drive(&mut s, &mut w);
    let preemptions = s.stats().num_preemptions_total;
    assert!(preemptions > 0, "the pool was meant to be too small");
    let resumed: Vec<&RunningSeq> = run
        .steps
        .iter()
        .flat_map(|o| o.running.iter().filter(|r| r.resumed))
        .collect();
    assert!(!resumed.is_empty());
    for r in &resumed {
        let p = &reqs[r.seq_id as usize].prompt_ids;
        assert!(
            r.resumed_token_ids.len() > p.len(),
            "prompt + output so far"
        );
        assert_eq!(&r.resumed_token_ids[..p.len()], p.as_slice());
        assert_eq!(r.new_block_ids.len(), r.num_scheduled.div_ceil(16) as usize);
    }
    for r in &reqs {
        assert_eq!(run.outputs[&r.id], solo(r, &[]), "request {}", r.id);
        assert_eq!(run.outputs[&r.id].0.len(), 80);
    }
}

#[test]
fn preemption_takes_the_most_recently_admitted() {
    // 6 blocks; three requests of 32 prompt tokens (2 blocks each) fill the pool; the first to
    // need a third block forces out the last admitted.
    let mut s = Scheduler::new(config(6, 4, 512)).unwrap();
    let mut w = FakeWorker::new(16, 6, VOCAB);
    for id in 0..3 {
        s.add_request(req(id, 32, 10)).unwrap();
    }
    let mut early: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let o = s.schedule(0.0);
    assert_eq!(o.new_requests.len(), 3);
    let st = w.step(&o).unwrap();
    for u in s.update(&o, &st).unwrap() {
        early.entry(u.id).or_default().extend(u.new_token_ids);
    }
    let o = s.schedule(1.0);
    assert_eq!(s.running_ids(), &[0, 1]);
    assert_eq!(s.waiting_ids().collect::<Vec<_>>(), vec![2]);
    assert_eq!(o.scheduled_ids().collect::<Vec<_>>(), vec![0, 1]);
    assert!(
        o.new_requests.is_empty(),
        "no admission in a step that preempted"
    );
    assert_eq!(s.stats().num_preemptions_total, 1);
    let st = w.step(&o).unwrap();
    for u in s.update(&o, &st).unwrap() {
        early.entry(u.id).or_default().extend(u.new_token_ids);
    }
    let run = drive(&mut s, &mut w);
    let resumed: Vec<&RunningSeq> = run
        .steps
        .iter()
        .flat_map(|o| o.running.iter().filter(|r| r.resumed))
        .collect();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].seq_id, 2);
    assert_eq!(
        resumed[0].resumed_token_ids.len(),
        33,
        "prompt + 1 output token"
    );
    for id in 0..3 {
        let (mut tokens, reason) = run.outputs[&id].clone();
        tokens.splice(0..0, early[&id].iter().copied());
        assert_eq!(
            (tokens, reason),
            solo(&req(id, 32, 10), &[]),
            "request {id}"
        );
    }
}

#[test]
fn abort_frees_blocks_at_once_and_tells_workers_next_step() {
    let mut s = Scheduler::new(config(16, 4, 512)).unwrap();
    let mut w = FakeWorker::new(16, 16, VOCAB);
    s.add_request(req(1, 40, 100)).unwrap();
    s.add_request(req(2, 20, 100)).unwrap();
    let o = s.schedule(0.0);
    let st = w.step(&o).unwrap();
    s.update(&o, &st).unwrap();
    assert_eq!(s.block_manager().num_used_blocks(), 3 + 2);
    assert!(s.abort(1));
    assert!(!s.abort(1), "already gone");
    assert_eq!(s.block_manager().num_used_blocks(), 2);
    assert_eq!(s.block_manager().block_table(1), &[] as &[BlockId]);
    let o = s.schedule(1.0);
    assert_eq!(o.finished_seq_ids, vec![1]);
    assert_eq!(o.scheduled_ids().collect::<Vec<_>>(), vec![2]);

    // Abort while the step is in flight: its token is dropped, the rest goes on.
    let st = w.step(&o).unwrap();
    assert!(s.abort(2));
    assert!(s.update(&o, &st).unwrap().is_empty());
    assert_eq!(s.block_manager().num_free_blocks(), 16);
    let o = s.schedule(2.0);
    assert_eq!(o.finished_seq_ids, vec![2]);
    w.step(&o).unwrap();
    assert_eq!(w.num_seqs(), 0);

    // A request aborted before it ever ran is never mentioned to the workers.
    s.add_request(req(3, 5, 5)).unwrap();
    assert!(s.abort(3));
    let o = s.schedule(3.0);
    assert!(o.finished_seq_ids.is_empty() && o.is_empty());
    assert_eq!(s.stats().requests_finished, 3);
}

/// Schedules `s` once and answers with `token` for every sequence due to sample.
fn step_with(s: &mut Scheduler, token: u32) -> Vec<RequestUpdate> {
    let o = s.schedule(0.0);
    let tokens = o
        .new_requests
        .iter()
        .filter(|n| n.num_computed + n.num_scheduled == n.prompt_ids.len() as u32)
        .map(|n| n.seq_id)
        .chain(o.running.iter().map(|r| r.seq_id))
        .map(|seq_id| SampledToken {
            seq_id,
            token_id: token,
        })
        .collect();
    s.update(
        &o,
        &StepOutput {
            step_id: o.step_id,
            tokens,
            ..StepOutput::default()
        },
    )
    .unwrap()
}

#[test]
fn finish_reasons() {
    let mut cfg = config(64, 8, 512);
    cfg.eos_token_ids = vec![2];
    let mut s = Scheduler::new(cfg).unwrap();
    let mut stop = req(1, 4, 10);
    stop.stop_token_ids = vec![7];
    s.add_request(stop).unwrap();
    let mut ignore = req(2, 4, 3);
    ignore.ignore_eos = true;
    s.add_request(ignore).unwrap();
    let mut min = req(3, 4, 10);
    min.min_tokens = 2;
    s.add_request(min).unwrap();
    s.add_request(req(4, 4, 10)).unwrap();

    let ups = step_with(&mut s, 2); // EOS
    let by_id: BTreeMap<SeqId, &RequestUpdate> = ups.iter().map(|u| (u.id, u)).collect();
    assert_eq!(by_id[&1].finished, Some(FinishReason::Eos(2)));
    assert_eq!(
        by_id[&1].new_token_ids,
        vec![2],
        "the EOS token is part of the output"
    );
    assert_eq!(by_id[&2].finished, None, "ignore_eos");
    assert_eq!(by_id[&3].finished, None, "min_tokens 2");
    assert_eq!(by_id[&4].finished, Some(FinishReason::Eos(2)));
    let ups = step_with(&mut s, 2);
    assert_eq!(ups[0].finished, None);
    assert_eq!(
        ups[1].finished,
        Some(FinishReason::Eos(2)),
        "min_tokens reached"
    );
    let ups = step_with(&mut s, 2);
    assert_eq!(ups[0].finished, Some(FinishReason::MaxTokens));
    assert_eq!(FinishReason::MaxTokens.as_str(), "length");
    assert!(!s.has_unfinished());

    let mut s = Scheduler::new(config(64, 8, 512)).unwrap();
    let mut stop = req(1, 4, 10);
    stop.stop_token_ids = vec![7];
    stop.ignore_eos = true;
    s.add_request(stop).unwrap();
    let ups = step_with(&mut s, 7);
    assert_eq!(ups[0].finished, Some(FinishReason::StopToken(7)));
    assert_eq!(ups[0].finished.unwrap().as_str(), "stop");
}

#[test]
fn context_full_ends_a_request_at_the_model_length_or_the_pool() {
    let mut cfg = config(64, 8, 512);
    cfg.max_model_len = 20;
    let mut s = Scheduler::new(cfg).unwrap();
    s.add_request(req(1, 17, 100)).unwrap();
    let mut out = Vec::new();
    while s.has_unfinished() {
        for u in step_with(&mut s, 5) {
            out.extend(u.new_token_ids);
            if let Some(r) = u.finished {
                assert_eq!(r, FinishReason::ContextFull);
            }
        }
    }
    assert_eq!(out.len(), 3, "17 + 3 = 20 tokens");

    // A pool of 2 blocks caps a lone sequence at 32 tokens, and it always gets there.
    let mut s = Scheduler::new(config(2, 8, 512)).unwrap();
    assert_eq!(s.context_limit(), 32);
    s.add_request(req(1, 30, 100)).unwrap();
    let mut w = FakeWorker::new(16, 2, VOCAB);
    let run = drive(&mut s, &mut w);
    assert_eq!(run.outputs[&1].0.len(), 2);
    assert_eq!(run.outputs[&1].1, FinishReason::ContextFull);
}

#[test]
fn rejected_requests_and_bad_step_outputs() {
    assert!(matches!(
        Scheduler::new(config(64, 0, 512)),
        Err(SchedulerError::ZeroLimit {
            field: "max_num_seqs"
        })
    ));
    let mut cfg = config(64, 8, 512);
    cfg.max_model_len = 50;
    let mut s = Scheduler::new(cfg).unwrap();
    s.add_request(req(1, 5, 5)).unwrap();
    assert_eq!(
        s.add_request(req(1, 5, 5)),
        Err(SchedulerError::DuplicateRequest { id: 1 })
    );
    assert_eq!(
        s.add_request(SchedRequest::new(2, vec![], 5, 0.0)),
        Err(SchedulerError::EmptyPrompt { id: 2 })
    );
    assert_eq!(
        s.add_request(req(2, 5, 0)),
        Err(SchedulerError::ZeroMaxTokens { id: 2 })
    );
    assert_eq!(
        s.add_request(req(2, 50, 5)),
        Err(SchedulerError::PromptTooLong {
            id: 2,
            len: 50,
            limit: 50
        })
    );
    s.add_request(req(2, 40, 5)).unwrap();

    let o = s.schedule(0.0);
    let good = StepOutput {
        step_id: o.step_id,
        tokens: vec![
            SampledToken {
                seq_id: 1,
                token_id: 3,
            },
            SampledToken {
                seq_id: 2,
                token_id: 3,
            },
        ],
        ..StepOutput::default()
    };
    let wrong_step = StepOutput {
        step_id: 99,
        ..good.clone()
    };
    assert!(matches!(
        s.update(&o, &wrong_step),
        Err(SchedulerError::StepMismatch { .. })
    ));
    let missing = StepOutput {
        tokens: good.tokens[..1].to_vec(),
        ..good.clone()
    };
    assert_eq!(
        s.update(&o, &missing),
        Err(SchedulerError::MissingToken {
            step: o.step_id,
            seq: 2
        })
    );
    let mut dup = good.clone();
    dup.tokens.push(good.tokens[0]);
    assert_eq!(
        s.update(&o, &dup),
        Err(SchedulerError::DuplicateToken {
            step: o.step_id,
            seq: 1
        })
    );
    // Errors changed nothing: the good answer is still taken, once.
    assert_eq!(s.update(&o, &good).unwrap().len(), 2);
    assert!(matches!(
        s.update(&o, &good),
        Err(SchedulerError::StepMismatch { .. })
    ));

    // Mid-prefill sequences must not sample.
    let mut cfg = config(64, 8, 16);
    cfg.max_model_len = 100;
    let mut s = Scheduler::new(cfg).unwrap();
    s.add_request(req(1, 40, 5)).unwrap();
    let o = s.schedule(0.0);
    let early = StepOutput {
        step_id: o.step_id,
        tokens: vec![SampledToken {
            seq_id: 1,
            token_id: 3,
        }],
        ..StepOutput::default()
    };
    assert_eq!(
        s.update(&o, &early),
        Err(SchedulerError::UnexpectedToken {
            step: o.step_id,
            seq: 1
        })
    );
}

#[test]
fn stats_count_running_waiting_and_kv() {
    let mut s = Scheduler::new(config(10, 2, 512)).unwrap();
    for id in 0..3 {
        s.add_request(req(id, 20, 5)).unwrap();
    }
    let st = s.stats();
    assert_eq!((st.running, st.waiting, st.kv_blocks_used), (0, 3, 0));
    let _ = s.schedule(0.0);
    let st = s.stats();
    assert_eq!(
        (
            st.running,
            st.waiting,
            st.kv_blocks_used,
            st.kv_blocks_total
        ),
        (2, 1, 4, 10)
    );
    assert!((st.kv_usage - 0.4).abs() < 1e-12);
    assert_eq!(st.steps, 1);
}

fn fork(id: SeqId, parent: SeqId, len: usize, max_tokens: u32) -> SchedRequest {
    let mut r = SchedRequest::new(id, prompt(parent, len), max_tokens, 0.0);
    r.fork_of = Some(parent);
    r
}

#[test]
fn forks_wait_for_the_prompt_then_share_its_full_blocks() {
    let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
    let mut w = FakeWorker::new(16, 64, VOCAB);
    s.add_request(req(1, 40, 5)).unwrap();
    s.add_request(fork(2, 1, 40, 5)).unwrap();
    s.add_request(fork(3, 1, 40, 5)).unwrap();
    assert_eq!(s.stats().waiting, 3);

    let o0 = s.schedule(0.0);
    let ids: Vec<SeqId> = o0.scheduled_ids().collect();
    assert_eq!(ids, vec![1], "forks wait for the parent's prompt");
    let parent_table = o0.new_requests[0].block_ids.clone();
    let st = w.step(&o0).unwrap();
    s.update(&o0, &st).unwrap();

    let o1 = s.schedule(0.1);
    check_step(&s, &o1);
    assert_eq!(o1.new_requests.len(), 2);
    for n in &o1.new_requests {
        // (40 - 1) / 16 = 2 full blocks shared; the last 8 prompt tokens recomputed.
        assert_eq!((n.num_computed, n.num_scheduled), (32, 8), "{n:?}");
        assert_eq!(n.block_ids[..2], parent_table[..2]);
        assert!(!parent_table.contains(&n.block_ids[2]), "own last block");
    }
    for &b in &parent_table[..2] {
        assert_eq!(s.block_manager().ref_count(b), Some(3));
    }
    let st = w.step(&o1).unwrap();
    let first = s.update(&o1, &st).unwrap();
    let run = drive(&mut s, &mut w);
    let (alone, reason) = solo(&req(1, 40, 5), &[]);
    for id in [2, 3] {
        let mut got = first
            .iter()
            .find(|u| u.id == id)
            .unwrap()
            .new_token_ids
            .clone();
        got.extend(&run.outputs[&id].0);
        assert_eq!(
            (got, run.outputs[&id].1),
            (alone.clone(), reason),
            "fork {id}"
        );
    }
}

#[test]
fn forks_of_an_aborted_parent_or_aborted_while_held_still_end_cleanly() {
    let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
    let mut w = FakeWorker::new(16, 64, VOCAB);
    s.add_request(req(1, 40, 5)).unwrap();
    s.add_request(fork(2, 1, 40, 5)).unwrap();
    s.add_request(fork(3, 1, 40, 5)).unwrap();
    assert!(s.abort(3), "a held fork can be aborted");
    assert_eq!(s.stats().waiting, 2);
    let o0 = s.schedule(0.0);
    let st = w.step(&o0).unwrap();
    // The parent ends before its prompt is done: its fork starts on its own.
    assert!(s.abort(1));
    s.update(&o0, &st).unwrap();
    let o1 = s.schedule(0.1);
    assert_eq!(o1.new_requests.len(), 1);
    assert_eq!(o1.new_requests[0].num_computed, 0, "nothing to share");
    let st = w.step(&o1).unwrap();
    let mut got = s.update(&o1, &st).unwrap()[0].new_token_ids.clone();
    let run = drive(&mut s, &mut w);
    got.extend(&run.outputs[&2].0);
    assert_eq!(got, solo(&req(1, 40, 5), &[]).0);
}

#[test]
fn a_fork_of_a_preempted_parent_recomputes_the_prompt() {
    // 6 blocks: the parent (40 + 30 tokens → 5 blocks) and a fork must preempt one another.
    let mut s = Scheduler::new(config(6, 8, 256)).unwrap();
    let mut w = FakeWorker::new(16, 6, VOCAB);
    s.add_request(req(1, 40, 30)).unwrap();
    s.add_request(fork(2, 1, 40, 30)).unwrap();
    let run = drive(&mut s, &mut w);
    let alone = solo(&req(1, 40, 30), &[]);
    assert_eq!(run.outputs[&1], alone);
    assert_eq!(run.outputs[&2], alone);
    assert!(s.stats().num_preemptions_total > 0);
}
