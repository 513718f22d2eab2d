//! The one place where client types meet the `bitnet.v1` wire types of `bitnet-proto`: requests
//! out ([`GenerateParams`] → `GenerateRequest`), responses in (`GenerateResponse` →
//! [`GenerateEvent`], `ModelInfo`, `ServerInfo`).

use crate::error::ClientError;
use crate::events::{
    FinishReason, GenerateEvent, ModelInfo, ServerInfo, TokenLogprob, TokenLogprobs, Usage,
};
use crate::params::{GenerateParams, Prompt, SamplingParams};
use bitnet_proto::serving as pb;
use std::time::Duration;

pub(crate) fn sampling(s: &SamplingParams) -> pb::SamplingParams {
    pb::SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        frequency_penalty: s.frequency_penalty,
        presence_penalty: s.presence_penalty,
        seed: s.seed,
        max_tokens: s.max_tokens,
        min_tokens: s.min_tokens,
        stop: s.stop.clone(),
        stop_token_ids: s.stop_token_ids.clone(),
        ignore_eos: s.ignore_eos,
        logprobs: s.logprobs,
        n: s.n,
    }
}

pub(crate) fn generate_request(p: &GenerateParams, request_id: String) -> pb::GenerateRequest {
    let input = match &p.prompt {
        Prompt::Text(text) => pb::generate_request::Input::Text(text.clone()),
        Prompt::TokenIds(ids) => {
            pb::generate_request::Input::TokenIds(pb::TokenIds { ids: ids.clone() })
        }
    };
    pb::GenerateRequest {
        request_id,
        input: Some(input),
        sampling: Some(sampling(&p.sampling)),
        chat: p.chat,
    }
}

fn usage(u: Option<pb::Usage>) -> Usage {
    let u = u.unwrap_or_default();
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cached_tokens: u.cached_tokens,
    }
}

fn logprobs(position: pb::TopLogprobs) -> Result<TokenLogprobs, ClientError> {
    let mut entries = position.entries.into_iter().map(|e| TokenLogprob {
        token_id: e.token_id,
        logprob: e.logprob,
    });
    let sampled = entries
        .next()
        .ok_or_else(|| ClientError::protocol("logprobs entry without the sampled token"))?;
    Ok(TokenLogprobs {
        sampled,
        top: entries.collect(),
    })
}

fn finish_reason(raw: i32) -> Result<FinishReason, ClientError> {
    match pb::FinishReason::try_from(raw) {
        Ok(pb::FinishReason::Stop) => Ok(FinishReason::Stop),
        Ok(pb::FinishReason::Length) => Ok(FinishReason::Length),
        Ok(pb::FinishReason::Abort) => Ok(FinishReason::Abort),
        Ok(pb::FinishReason::Error) => Ok(FinishReason::Error),
        Ok(pb::FinishReason::Unspecified) | Err(_) => Err(ClientError::protocol(format!(
            "final message with finish reason {raw}"
        ))),
    }
}

/// One stream message as an event; an in-band `GenerateError` becomes `ClientError::Stream`.
pub(crate) fn event(
    msg: pb::GenerateResponse,
    request_id: &str,
) -> Result<GenerateEvent, ClientError> {
    use pb::generate_response::Response;
    match msg.response {
        Some(Response::Chunk(c)) => Ok(GenerateEvent::Chunk {
            index: c.index,
            token_ids: c.token_ids,
            text: c.text,
            usage: usage(c.usage),
            logprobs: c
                .logprobs
                .into_iter()
                .map(logprobs)
                .collect::<Result<_, _>>()?,
        }),
        Some(Response::Complete(c)) => Ok(GenerateEvent::Complete {
            index: c.index,
            output_ids: c.output_ids,
            finish_reason: finish_reason(c.finish_reason)?,
            usage: usage(c.usage),
            matched_stop: (!c.matched_stop.is_empty()).then_some(c.matched_stop),
        }),
        Some(Response::Error(e)) => Err(ClientError::Stream {
            request_id: if msg.request_id.is_empty() {
                request_id.to_string()
            } else {
                msg.request_id
            },
            code: e.code,
            message: e.message,
            details: e.details,
        }),
        None => Err(ClientError::protocol("stream message without a response")),
    }
}

pub(crate) fn model_info(m: pb::ModelInfo) -> ModelInfo {
    ModelInfo {
        model_path: m.model_path,
        family: m.family,
        architecture: m.architecture,
        vocab_size: m.vocab_size,
        max_context: m.max_context,
        hidden_size: m.hidden_size,
        num_layers: m.num_layers,
        tensor_parallel: m.tensor_parallel,
        eos_token_ids: m.eos_token_ids,
        block_size: m.block_size,
        device: m.device,
    }
}

pub(crate) fn server_info(s: pb::ServerInfo) -> ServerInfo {
    let uptime = if s.uptime_seconds.is_finite() && s.uptime_seconds > 0.0 {
        Duration::from_secs_f64(s.uptime_seconds)
    } else {
        Duration::ZERO
    };
    ServerInfo {
        running: s.running,
        waiting: s.waiting,
        kv_usage: s.kv_usage,
        kv_blocks_total: s.kv_blocks_total,
        kv_blocks_used: s.kv_blocks_used,
        uptime,
        requests_finished: s.requests_finished,
        version: s.version,
        max_num_seqs: s.max_num_seqs,
        serving: s.serving,
        num_preemptions: s.num_preemptions,
        steps_timed: s.steps_timed,
        step_wall_ms_total: s.step_wall_ms_total,
        step_worker_ms_total: s.step_worker_ms_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_sampling_fields_stay_unset_and_zero_stays_zero() {
        let p = GenerateParams::text("hi")
            .with_sampling(SamplingParams::greedy().top_k(0).seed(0).stop("x"));
        let req = generate_request(&p, "r".into());
        let s = req.sampling.unwrap();
        assert_eq!(s.temperature, Some(0.0));
        assert_eq!(s.top_k, Some(0));
        assert_eq!(s.seed, Some(0));
        assert_eq!(s.stop, vec!["x".to_string()]);
        assert_eq!(
            (s.top_p, s.max_tokens, s.n, s.ignore_eos),
            (None, None, None, None)
        );
    }

    #[test]
    fn unspecified_finish_reason_is_a_protocol_error() {
        let msg = pb::GenerateResponse {
            request_id: "r".into(),
            response: Some(pb::generate_response::Response::Complete(
                pb::GenerateComplete::default(),
            )),
        };
        assert!(matches!(event(msg, "r"), Err(ClientError::Protocol { .. })));
    }
}
