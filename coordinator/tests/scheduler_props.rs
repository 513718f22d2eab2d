//! Property test of the scheduler over seeded random event sequences: arrivals, prompt
//! lengths, output limits, stop tokens, aborts (queued, running and mid-step) and small KV
//! pools, driven by the deterministic [`FakeWorker`] whose attention reads history back through
//! the block tables.
//!
//! Some requests are forks (further samples of an earlier request's prompt, `n > 1`).
//!
//! After every step: the token budget and `max_num_seqs` hold, no KV block is held by two
//! sequences except a full prompt block shared by samples of one prompt, the block manager's
//! books balance, and the worker read back uncorrupted KV. At the end: first admissions
//! followed arrival order (FCFS, forks aside), every request ended exactly
//! once, every block is free, the workers hold no state, and every request that was not aborted
//! produced exactly the tokens it gets alone (an independent oracle), preempted or not.

use std::collections::{BTreeMap, HashMap, HashSet};

use bitnet_coordinator::scheduler::{
    FakeWorker, FinishReason, SchedRequest, Scheduler, SchedulerConfig, SeqId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SCENARIOS: u64 = 1000;
const VOCAB: u32 = 64;
const EOS: u32 = 0;

#[derive(Default)]
struct Totals {
    steps: u64,
    requests: u64,
    preemptions: u64,
    aborts: u64,
    aborts_in_flight: u64,
    chunked_steps: u64,
    /// Forks admitted on their parent's prompt blocks.
    shared_starts: u64,
    finished_by: BTreeMap<&'static str, u64>,
}

struct Planned {
    req: SchedRequest,
    arrive_step: u64,
    abort_step: Option<u64>,
}

/// The output a request gets alone: the fake model's tokens until a finish condition.
fn oracle(req: &SchedRequest, eos: &[u32], context_limit: usize) -> (Vec<u32>, FinishReason) {
    let mut tokens = req.prompt_ids.clone();
    loop {
        let t = FakeWorker::next_token(VOCAB, &tokens);
        tokens.push(t);
        let n_out = tokens.len() - req.prompt_ids.len();
        let out = tokens[req.prompt_ids.len()..].to_vec();
        if n_out >= req.min_tokens as usize {
            if !req.ignore_eos && eos.contains(&t) {
                return (out, FinishReason::Eos(t));
            }
            if req.stop_token_ids.contains(&t) {
                return (out, FinishReason::StopToken(t));
            }
            if n_out >= req.max_tokens as usize {
                return (out, FinishReason::MaxTokens);
            }
        }
        if tokens.len() >= context_limit {
            return (out, FinishReason::ContextFull);
        }
    }
}

fn random_config(rng: &mut ChaCha8Rng) -> SchedulerConfig {
    let block_size = [16, 16, 16, 4, 7][rng.random_range(0..5)];
    SchedulerConfig {
        block_size,
        num_blocks: rng.random_range(2..40),
        max_num_seqs: rng.random_range(1..9),
        max_batched_tokens: if rng.random_bool(0.2) {
            rng.random_range(1..8)
        } else {
            rng.random_range(8..130)
        },
        max_model_len: rng.random_range(8..300),
        eos_token_ids: if rng.random_bool(0.5) {
            vec![EOS]
        } else {
            vec![]
        },
    }
}

fn random_requests(rng: &mut ChaCha8Rng, context_limit: usize) -> Vec<Planned> {
    let n = rng.random_range(1..14);
    let mut planned: Vec<Planned> = (0..n)
        .map(|i| {
            let max_prompt = (context_limit - 1).min(150);
            let len = rng.random_range(1..=max_prompt);
            let max_tokens = rng.random_range(1..70);
            let mut req = SchedRequest::new(
                1000 + i,
                (0..len).map(|_| rng.random_range(0..VOCAB)).collect(),
                max_tokens,
                0.0,
            );
            req.min_tokens = if rng.random_bool(0.2) {
                rng.random_range(0..=max_tokens)
            } else {
                0
            };
            req.ignore_eos = rng.random_bool(0.3);
            if rng.random_bool(0.3) {
                req.stop_token_ids = vec![rng.random_range(0..VOCAB)];
            }
            let arrive_step = rng.random_range(0..40);
            let abort_step = rng
                .random_bool(0.2)
                .then(|| arrive_step + rng.random_range(0..30));
            Planned {
                req,
                arrive_step,
                abort_step,
            }
        })
        .collect();
    // Some requests are further samples (n > 1) of an earlier one: same prompt, forked from it
    // (sharing its prompt blocks while it runs, on their own otherwise).
    for i in 1..planned.len() {
        if rng.random_bool(0.25) {
            let parent = rng.random_range(0..i);
            let (id, prompt) = (
                planned[parent].req.id,
                planned[parent].req.prompt_ids.clone(),
            );
            planned[i].req.prompt_ids = prompt;
            planned[i].req.fork_of = Some(id);
        }
    }
    planned
}

fn scenario(seed: u64, totals: &mut Totals) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = random_config(&mut rng);
    let mut s = Scheduler::new(cfg.clone()).unwrap();
    let limit = s.context_limit();
    let plan = random_requests(&mut rng, limit);
    let mut worker = FakeWorker::new(cfg.block_size, cfg.num_blocks, VOCAB);
    let ctx = |what: &str| format!("seed {seed}, {cfg:?}: {what}");
    let prompts: HashMap<SeqId, Vec<u32>> = plan
        .iter()
        .map(|p| (p.req.id, p.req.prompt_ids.clone()))
        .collect();

    let mut outputs: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut ended: HashMap<SeqId, FinishReason> = HashMap::new();
    let mut added = 0usize;
    let mut add_order: Vec<SeqId> = Vec::new();
    let mut admit_order: Vec<SeqId> = Vec::new();
    let mut step_no = 0u64;
    loop {
        // Events due this step: arrivals, then planned aborts.
        for p in plan.iter().filter(|p| p.arrive_step == step_no) {
            s.add_request(p.req.clone()).unwrap();
            add_order.push(p.req.id);
            added += 1;
        }
        for p in plan.iter().filter(|p| p.abort_step == Some(step_no)) {
            if s.abort(p.req.id) {
                assert!(ended.insert(p.req.id, FinishReason::Abort).is_none());
                totals.aborts += 1;
            }
        }
        if added == plan.len() && !s.has_unfinished() {
            break;
        }
        let now = step_no as f64 * 0.01;
        let before = s.stats().num_preemptions_total;
        let out = s.schedule(now);
        totals.preemptions += s.stats().num_preemptions_total - before;

        // Per-step invariants.
        let tokens = out.num_scheduled_tokens();
        assert!(
            tokens <= cfg.max_batched_tokens,
            "{}",
            ctx(&format!("{out:?}"))
        );
        assert!(
            out.num_seqs() <= cfg.max_num_seqs,
            "{}",
            ctx("max_num_seqs")
        );
        assert!(s.num_running() <= cfg.max_num_seqs, "{}", ctx("running"));
        let bm = s.block_manager();
        bm.check_invariants()
            .unwrap_or_else(|e| panic!("{}", ctx(&e)));
        // A block is held by one sequence, or shared among samples of one prompt as one of
        // its full prompt blocks (forks).
        let mut owner: HashMap<u32, (SeqId, usize)> = HashMap::new();
        let mut held = 0;
        for &id in s.running_ids() {
            for (i, &b) in bm.block_table(id).iter().enumerate() {
                match owner.get(&b) {
                    None => {
                        held += 1;
                        owner.insert(b, (id, i));
                    }
                    Some(&(other, j)) => {
                        let prompt = |seq: SeqId| &prompts[&seq];
                        let full = (prompt(id).len() - 1) / cfg.block_size;
                        let fork_block = prompt(id) == prompt(other) && i == j && i < full;
                        assert!(
                            fork_block,
                            "{}",
                            ctx(&format!("block {b} held by {other} and {id}"))
                        );
                    }
                }
            }
        }
        assert_eq!(
            held,
            bm.num_used_blocks(),
            "{}",
            ctx("blocks held outside running")
        );
        admit_order.extend(out.new_requests.iter().map(|n| n.seq_id));
        if out
            .new_requests
            .iter()
            .any(|n| (n.num_computed + n.num_scheduled) < n.prompt_ids.len() as u32)
        {
            totals.chunked_steps += 1;
        }
        totals.shared_starts += out
            .new_requests
            .iter()
            .filter(|n| n.num_computed > 0)
            .count() as u64;
        if s.has_unfinished() {
            assert!(!out.is_empty(), "{}", ctx("stalled with requests left"));
        }

        let step = worker
            .step(&out)
            .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string())));
        // Sometimes a request is aborted while its step is in flight.
        if rng.random_bool(0.008) && s.num_running() > 0 {
            let id = s.running_ids()[rng.random_range(0..s.num_running())];
            assert!(s.abort(id));
            assert!(ended.insert(id, FinishReason::Abort).is_none());
            totals.aborts += 1;
            totals.aborts_in_flight += 1;
        }
        for u in s.update(&out, &step).unwrap() {
            outputs.entry(u.id).or_default().extend(&u.new_token_ids);
            if let Some(r) = u.finished {
                assert!(ended.insert(u.id, r).is_none(), "{}", ctx("ended twice"));
                assert!(!s.contains(u.id));
            }
        }
        step_no += 1;
        assert!(step_no < 50_000, "{}", ctx("no progress"));
    }
    // One more step tells the workers about the last endings.
    let out = s.schedule(step_no as f64);
    assert!(out.is_empty());
    worker.step(&out).unwrap();
    totals.steps += step_no;
    totals.requests += plan.len() as u64;

    assert_eq!(ended.len(), plan.len(), "{}", ctx("every request ends"));
    assert_eq!(
        s.block_manager().num_free_blocks(),
        cfg.num_blocks,
        "{}",
        ctx("leak")
    );
    assert_eq!(s.block_manager().num_seqs(), 0);
    assert_eq!(worker.num_seqs(), 0, "{}", ctx("worker state left"));
    let st = s.stats();
    assert_eq!((st.running, st.waiting, st.kv_blocks_used), (0, 0, 0));
    assert_eq!(st.requests_finished, plan.len() as u64);

    // FCFS: first admissions happen in arrival order (no overtaking); forks wait for their
    // parent's prompt outside the queue, so they are left out.
    let admitted: HashSet<SeqId> = admit_order.iter().copied().collect();
    let forks: HashSet<SeqId> = plan
        .iter()
        .filter(|p| p.req.fork_of.is_some())
        .map(|p| p.req.id)
        .collect();
    admit_order.retain(|id| !forks.contains(id));
    add_order.retain(|id| admitted.contains(id) && !forks.contains(id));
    assert_eq!(admit_order, add_order, "{}", ctx("admission order"));

    let ids: HashSet<SeqId> = plan.iter().map(|p| p.req.id).collect();
    for p in &plan {
        let reason = ended[&p.req.id];
        *totals.finished_by.entry(reason.as_str()).or_default() += 1;
        let got = outputs.remove(&p.req.id).unwrap_or_default();
        if reason == FinishReason::Abort {
            let (want, _) = oracle(&p.req, &cfg.eos_token_ids, limit);
            assert!(want.starts_with(&got), "{}", ctx("aborted output diverged"));
        } else {
            assert_eq!(
                (got, reason),
                oracle(&p.req, &cfg.eos_token_ids, limit),
                "{}",
                ctx(&format!("request {}", p.req.id))
            );
        }
    }
    assert!(outputs.keys().all(|id| ids.contains(id)));
}

#[test]
fn random_event_sequences_keep_the_invariants() {
    let mut totals = Totals::default();
    for seed in 0..SCENARIOS {
        scenario(seed, &mut totals);
    }
    println!(
        "scheduler properties: {SCENARIOS} scenarios, {} steps, {} requests, {} preemptions, \
         {} aborts ({} mid-step), {} steps with a chunked prefill, {} forks on shared blocks, \
         endings {:?}",
        totals.steps,
        totals.requests,
        totals.preemptions,
        totals.aborts,
        totals.aborts_in_flight,
        totals.chunked_steps,
        totals.shared_starts,
        totals.finished_by
    );
    // No vacuous pass: the scenarios must have exercised the hard paths.
    assert!(
        totals.preemptions >= 50,
        "too few preemptions: {}",
        totals.preemptions
    );
    assert!(totals.aborts_in_flight >= 5);
    assert!(totals.chunked_steps >= 50);
    assert!(totals.shared_starts >= 50, "{}", totals.shared_starts);
    for reason in ["stop", "length", "abort"] {
        assert!(
            totals.finished_by.get(reason).copied().unwrap_or(0) >= 10,
            "{reason}"
        );
    }
}
