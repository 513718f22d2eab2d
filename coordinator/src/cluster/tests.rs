//! Unit tests of the worker side: a [`Rank`] over the demo model runs the same steps as the
//! in-process executor (chunked prefill, decode, a preempted sequence resumed, seeded sampling)
//! and refuses steps that break the protocol.

use super::rank::Rank;
use super::wire;
use crate::engine::{Executor, InProcessExecutor};
use crate::scheduler::{NewSeq, RunningSeq, SchedulerOutput};
use bitnet_kernels::CpuBackend;
use bitnet_proto::worker::{LoadModelRequest, StepRequest};
use bitnet_worker::{Model, SamplingParams};
use std::collections::HashMap;

const MAX_LEN: usize = 64;

fn rank() -> Rank {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Rank::new(1, listener).unwrap()
}

fn loaded_rank() -> Rank {
    let mut r = rank();
    r.load_model(&LoadModelRequest {
        model_dir: String::new(),
        tp_rank: 0,
        tp_size: 1,
        verify: false,
        max_model_len: MAX_LEN as u32,
        lm_head_int8: false,
    })
    .unwrap();
    assert_eq!(r.profile(16, 0, 8).unwrap(), 8);
    r
}

/// A new sequence whose (one-block) table is block `seq_id`.
fn new_seq(seq_id: u64, prompt: &[u32], scheduled: u32) -> NewSeq {
    NewSeq {
        seq_id,
        prompt_ids: prompt.to_vec(),
        num_computed: 0,
        num_scheduled: scheduled,
        block_ids: vec![seq_id as u32],
        queue_time_s: 0.0,
    }
}

/// A running sequence; a resumed one gets the new table `[seq_id + 4]`.
fn running(seq_id: u64, scheduled: u32, resumed: Option<Vec<u32>>) -> RunningSeq {
    RunningSeq {
        seq_id,
        num_scheduled: scheduled,
        new_block_ids: match resumed {
            Some(_) => vec![seq_id as u32 + 4],
            None => Vec::new(),
        },
        resumed: resumed.is_some(),
        resumed_token_ids: resumed.unwrap_or_default(),
    }
}

#[test]
fn steps_match_the_in_process_executor() {
    let mut rank = loaded_rank();
    let tok = crate::demo::tokenizer().unwrap();
    let model = Model::new(crate::demo::weights(&tok), CpuBackend::from_env(1).unwrap());
    let mut reference = InProcessExecutor::new(model, MAX_LEN, 8).unwrap();
    let greedy = SamplingParams::default();
    let seeded = SamplingParams {
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        seed: Some(7),
    };
    let sampling = HashMap::from([
        (1, wire::sampling_state(&greedy, 0, None)),
        (2, wire::sampling_state(&seeded, 7, Some(2))),
    ]);
    reference.register(1, sampling[&1].clone()).unwrap();
    reference.register(2, sampling[&2].clone()).unwrap();
    let prompt = [1u32, 5, 9, 13, 17];
    let mut step = |id: u64, new: Vec<NewSeq>, run: Vec<RunningSeq>| {
        let out = SchedulerOutput {
            step_id: id,
            new_requests: new,
            running: run,
            finished_seq_ids: Vec::new(),
        };
        let expected = reference.step(&out).unwrap();
        let (tokens, _) = rank.step(&wire::step_request(&out, &sampling, 0)).unwrap();
        let got: Vec<(u64, u32)> = tokens.iter().map(|t| (t.seq_id, t.token_id)).collect();
        let mut want: Vec<(u64, u32)> = expected
            .tokens
            .iter()
            .map(|t| (t.seq_id, t.token_id))
            .collect();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want, "step {id}");
        got
    };
    let of = |tokens: &[(u64, u32)], seq: u64| -> Vec<u32> {
        tokens.iter().filter(|t| t.0 == seq).map(|t| t.1).collect()
    };
    // Chunked prefill: no token until the prompt is complete.
    let first = step(
        1,
        vec![new_seq(1, &prompt, 3), new_seq(2, &prompt, 5)],
        vec![],
    );
    assert_eq!(first.len(), 1);
    let second = step(2, vec![], vec![running(1, 2, None), running(2, 1, None)]);
    assert_eq!(second.len(), 2);
    // Sequence 2 is preempted and resumed from prompt + output (its sampler goes on).
    let mut resumed: Vec<u32> = prompt.to_vec();
    resumed.extend(of(&first, 2));
    resumed.extend(of(&second, 2));
    let n = resumed.len() as u32;
    let third = step(
        3,
        vec![],
        vec![running(1, 1, None), running(2, n, Some(resumed))],
    );
    assert_eq!(third.len(), 2);
    let fourth = step(4, vec![], vec![running(1, 1, None), running(2, 1, None)]);
    assert_eq!(fourth.len(), 2);
}

#[test]
fn steps_that_break_the_protocol_are_refused() {
    let unloaded = StepRequest {
        step_id: 1,
        ..Default::default()
    };
    assert!(rank().step(&unloaded).is_err(), "no model loaded");
    let mut unprofiled = rank();
    unprofiled
        .load_model(&LoadModelRequest {
            model_dir: String::new(),
            tp_size: 1,
            ..Default::default()
        })
        .unwrap();
    let err = unprofiled.step(&unloaded).unwrap_err();
    assert!(err.to_string().contains("Profile"), "{err}");
    let mut rank = loaded_rank();
    let out = SchedulerOutput {
        step_id: 1,
        running: vec![running(9, 1, None)],
        ..Default::default()
    };
    let err = rank
        .step(&wire::step_request(&out, &HashMap::new(), 0))
        .unwrap_err();
    assert!(err.to_string().contains("never sent as new"), "{err}");
    // Asking for more tokens than the prompt has.
    let out = SchedulerOutput {
        step_id: 2,
        new_requests: vec![new_seq(1, &[1, 2], 3)],
        ..Default::default()
    };
    assert!(rank
        .step(&wire::step_request(&out, &HashMap::new(), 0))
        .is_err());
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[test]
fn nccl_is_chosen_only_for_cuda_ranks_on_distinct_gpus_in_an_nccl_build() {
    use super::launcher::collective_kind;
    use crate::device::Device;
    use bitnet_proto::worker::CollectiveKind;
    let nccl = if cfg!(feature = "nccl") {
        CollectiveKind::Nccl
    } else {
        CollectiveKind::TcpRing
    };
    assert_eq!(
        collective_kind(1, Device::Cuda, None),
        CollectiveKind::Single
    );
    assert_eq!(
        collective_kind(2, Device::Cpu, None),
        CollectiveKind::TcpRing
    );
    assert_eq!(collective_kind(2, Device::Cuda, None), nccl);
    assert_eq!(collective_kind(2, Device::Cuda, Some("3,5")), nccl);
    // Two ranks on one GPU: NCCL refuses that, the TCP ring does not.
    assert_eq!(
        collective_kind(2, Device::Cuda, Some("3")),
        CollectiveKind::TcpRing
    );
}

#[test]
fn an_nccl_group_is_refused_cleanly_without_nccl() {
    use bitnet_proto::worker::{CollectiveKind, InitCollectiveRequest};
    let id = rank().nccl_unique_id();
    if !cfg!(feature = "nccl") {
        let err = id.unwrap_err().to_string();
        assert!(err.contains("rebuild with --features nccl"), "{err}");
    }
    // A CPU rank never joins NCCL, whatever the build.
    let mut cpu = rank();
    let err = cpu
        .init_collective(&InitCollectiveRequest {
            rank: 0,
            world_size: 2,
            nccl_unique_id: vec![7; 128],
            kind: CollectiveKind::Nccl as i32,
            timeout_ms: 100,
            ..Default::default()
        })
        .unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("nccl") || status.message().contains("NCCL"),
        "{status}"
    );
}
