//! Conversions between the scheduler's step types (`crate::scheduler`) and the worker proto
//! (`bitnet.worker.v1`), in one place: [`step_request`] (coordinator → workers),
//! [`step_output`] / [`tokens_output`] (workers → scheduler, with logprobs) and the sampling
//! settings both ways.

use crate::scheduler::{SampledToken, SchedulerOutput, SeqId, StepOutput};
use bitnet_proto::worker::{
    NewRequest, RunningRequest, SampledToken as WireToken, SamplingState, StepRequest, StepResponse,
};
pub use bitnet_worker::sampling_params;
use bitnet_worker::{SamplingParams, TokenLogprobs};
use std::collections::HashMap;

/// The sampling settings of a new sequence on the wire; `seed` is the one the coordinator
/// settled on (the client's, or a random one), so every rank draws the same stream;
/// `logprobs`: top-n logprobs wanted with each token (`None`: none).
pub fn sampling_state(params: &SamplingParams, seed: u64, logprobs: Option<u32>) -> SamplingState {
    SamplingState {
        temperature: params.temperature,
        top_p: params.top_p,
        top_k: params.top_k as u32,
        seed,
        logprobs,
        ..Default::default()
    }
}

/// The `StepRequest` of a scheduled step; `sampling` holds the settings of every sequence
/// that may appear as new.
pub fn step_request(
    out: &SchedulerOutput,
    sampling: &HashMap<SeqId, SamplingState>,
    timeout_ms: u32,
) -> StepRequest {
    StepRequest {
        step_id: out.step_id,
        new_requests: out
            .new_requests
            .iter()
            .map(|r| NewRequest {
                seq_id: r.seq_id,
                prompt_ids: r.prompt_ids.clone(),
                num_computed: r.num_computed,
                num_scheduled: r.num_scheduled,
                block_ids: r.block_ids.clone(),
                sampling: sampling.get(&r.seq_id).cloned(),
            })
            .collect(),
        running: out
            .running
            .iter()
            .map(|r| RunningRequest {
                seq_id: r.seq_id,
                num_scheduled: r.num_scheduled,
                new_block_ids: r.new_block_ids.clone(),
                resumed: r.resumed,
                resumed_token_ids: r.resumed_token_ids.clone(),
            })
            .collect(),
        finished_seq_ids: out.finished_seq_ids.clone(),
        timeout_ms,
    }
}

/// The scheduler's view of a rank's answer.
pub fn step_output(resp: &StepResponse) -> StepOutput {
    tokens_output(resp.step_id, &resp.tokens)
}

/// The scheduler's view of a step's sampled tokens, with each token's logprobs (zero when the
/// sequence asked for none).
pub fn tokens_output(step_id: u64, tokens: &[WireToken]) -> StepOutput {
    StepOutput {
        step_id,
        tokens: tokens
            .iter()
            .map(|t| SampledToken {
                seq_id: t.seq_id,
                token_id: t.token_id,
            })
            .collect(),
        logprobs: tokens
            .iter()
            .map(|t| {
                let top = t
                    .top_ids
                    .iter()
                    .copied()
                    .zip(t.top_logprobs.iter().copied())
                    .collect();
                let lp = TokenLogprobs {
                    token_id: t.token_id,
                    logprob: t.logprob,
                    top,
                };
                (t.seq_id, lp)
            })
            .collect::<HashMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{NewSeq, RunningSeq};

    #[test]
    fn a_step_survives_the_round_trip() {
        let out = SchedulerOutput {
            step_id: 7,
            new_requests: vec![NewSeq {
                seq_id: 1,
                prompt_ids: vec![1, 2, 3],
                num_computed: 0,
                num_scheduled: 3,
                block_ids: vec![4],
                queue_time_s: 0.5,
            }],
            running: vec![RunningSeq {
                seq_id: 2,
                num_scheduled: 1,
                new_block_ids: vec![],
                resumed: true,
                resumed_token_ids: vec![5, 6],
            }],
            finished_seq_ids: vec![3],
        };
        let params = SamplingParams {
            temperature: 0.7,
            top_k: 5,
            top_p: 0.9,
            seed: None,
        };
        let sampling = HashMap::from([(1, sampling_state(&params, 42, Some(3)))]);
        let req = step_request(&out, &sampling, 0);
        assert_eq!(req.step_id, 7);
        assert_eq!(req.new_requests[0].prompt_ids, vec![1, 2, 3]);
        assert_eq!(req.new_requests[0].block_ids, vec![4]);
        assert!(req.running[0].resumed);
        assert_eq!(req.finished_seq_ids, vec![3]);
        let back = sampling_params(req.new_requests[0].sampling.as_ref());
        assert_eq!(back.seed, Some(42));
        assert_eq!(back.top_k, 5);
        assert_eq!(
            req.new_requests[0].sampling.as_ref().unwrap().logprobs,
            Some(3)
        );
    }
}
