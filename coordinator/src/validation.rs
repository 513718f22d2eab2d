//! Validation: the one place a wire `GenerateRequest` becomes a [`ValidRequest`] (tokenized,
//! every limit checked) or a [`ValidationError`] naming the field, which the server maps to
//! `INVALID_ARGUMENT`. Nothing downstream (scheduler, workers) accepts unvalidated input, so a
//! bad request can never reach a forward pass (SERVING.md: "one bad request kills the engine").

use crate::chat::{ChatMessage, ChatTemplate};
use crate::tokenizer::TextTokenizer;
use bitnet_proto::serving::{generate_request::Input, GenerateRequest};
use thiserror::Error;

/// A request field that cannot be served.
#[derive(Debug, Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        message: message.into(),
    }
}

/// The limits a request is checked against.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationLimits {
    pub vocab_size: usize,
    /// Prompt plus generated tokens may not exceed this.
    pub max_context: usize,
    /// `max_tokens` when the request leaves it unset (capped by the context left).
    pub default_max_tokens: u32,
    pub max_n: u32,
    pub max_logprobs: u32,
    pub max_stop_strings: usize,
    pub max_stop_len: usize,
    pub max_request_id_len: usize,
}

impl ValidationLimits {
    /// Defaults for a model of `vocab_size` tokens and `max_context` positions.
    pub fn new(vocab_size: usize, max_context: usize) -> Self {
        Self {
            vocab_size,
            max_context,
            default_max_tokens: 256,
            max_n: 16,
            max_logprobs: 20,
            max_stop_strings: 16,
            max_stop_len: 256,
            max_request_id_len: 256,
        }
    }
}

/// Sampling settings with every default filled in and every value in range.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSampling {
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0: off.
    pub top_k: u32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: Option<u64>,
    /// Top-n logprobs per generated token (`None`: no logprobs; `Some(0)`: only the sampled
    /// token's).
    pub logprobs: Option<u32>,
}

/// A request that passed validation: the only kind the engine accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidRequest {
    pub request_id: String,
    pub prompt_ids: Vec<u32>,
    pub sampling: ValidSampling,
    pub max_tokens: u32,
    pub min_tokens: u32,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub n: u32,
}

/// Checks a float is finite and inside `[lo, hi]` (or `(lo, hi]` when `open_low`).
fn in_range(
    field: &'static str,
    v: f32,
    lo: f32,
    hi: f32,
    open_low: bool,
) -> Result<f32, ValidationError> {
    let low_ok = if open_low { v > lo } else { v >= lo };
    if !v.is_finite() || !low_ok || v > hi {
        let interval = if open_low { "(" } else { "[" };
        return Err(invalid(
            field,
            format!("must be a finite number in {interval}{lo}, {hi}], got {v}"),
        ));
    }
    Ok(v)
}

/// Validates a wire request. `tokenizer` is needed for text input (and `chat` for chat input);
/// `fresh_id` makes a request id when the client sent none.
pub fn validate(
    req: &GenerateRequest,
    limits: &ValidationLimits,
    tokenizer: Option<&TextTokenizer>,
    chat: Option<&ChatTemplate>,
    fresh_id: impl FnOnce() -> String,
) -> Result<ValidRequest, ValidationError> {
    let request_id = if req.request_id.is_empty() {
        fresh_id()
    } else if req.request_id.len() > limits.max_request_id_len {
        return Err(invalid(
            "request_id",
            format!("longer than {} bytes", limits.max_request_id_len),
        ));
    } else {
        req.request_id.clone()
    };
    let prompt_ids = prompt_ids(req, tokenizer, chat)?;
    if prompt_ids.is_empty() {
        return Err(invalid("input", "the prompt is empty"));
    }
    if let Some((pos, id)) = prompt_ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= limits.vocab_size)
    {
        return Err(invalid(
            "input",
            format!(
                "prompt token {id} at position {pos} is outside the vocabulary (size {})",
                limits.vocab_size
            ),
        ));
    }
    if prompt_ids.len() >= limits.max_context {
        return Err(invalid(
            "input",
            format!(
                "the prompt has {} tokens; the context holds {} (at least one must be left to generate)",
                prompt_ids.len(),
                limits.max_context
            ),
        ));
    }
    let room = (limits.max_context - prompt_ids.len()) as u32;

    let s = req.sampling.clone().unwrap_or_default();
    let sampling = ValidSampling {
        temperature: in_range("temperature", s.temperature.unwrap_or(1.0), 0.0, 1e4, false)?,
        top_p: in_range("top_p", s.top_p.unwrap_or(1.0), 0.0, 1.0, true)?,
        top_k: s.top_k.unwrap_or(0),
        min_p: in_range("min_p", s.min_p.unwrap_or(0.0), 0.0, 1.0, false)?,
        repetition_penalty: in_range(
            "repetition_penalty",
            s.repetition_penalty.unwrap_or(1.0),
            0.0,
            100.0,
            true,
        )?,
        frequency_penalty: in_range(
            "frequency_penalty",
            s.frequency_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
            false,
        )?,
        presence_penalty: in_range(
            "presence_penalty",
            s.presence_penalty.unwrap_or(0.0),
            -2.0,
            2.0,
            false,
        )?,
        seed: s.seed,
        logprobs: s.logprobs,
    };
    if let Some(n) = sampling.logprobs.filter(|&n| n > limits.max_logprobs) {
        return Err(invalid(
            "logprobs",
            format!("at most {} per token, got {n}", limits.max_logprobs),
        ));
    }
    let max_tokens = match s.max_tokens {
        Some(0) => return Err(invalid("max_tokens", "must be at least 1")),
        Some(m) if m > room => {
            return Err(invalid(
                "max_tokens",
                format!(
                    "{m} new tokens after a prompt of {} exceed the context of {} tokens (at most {room})",
                    prompt_ids.len(),
                    limits.max_context
                ),
            ))
        }
        Some(m) => m,
        None => limits.default_max_tokens.min(room),
    };
    let min_tokens = s.min_tokens.unwrap_or(0);
    if min_tokens > max_tokens {
        return Err(invalid(
            "min_tokens",
            format!("{min_tokens} is more than max_tokens {max_tokens}"),
        ));
    }
    let n = s.n.unwrap_or(1);
    if n == 0 || n > limits.max_n {
        return Err(invalid(
            "n",
            format!("must be between 1 and {}, got {n}", limits.max_n),
        ));
    }
    if s.stop.len() > limits.max_stop_strings {
        return Err(invalid(
            "stop",
            format!("at most {} stop strings", limits.max_stop_strings),
        ));
    }
    if let Some(bad) = s
        .stop
        .iter()
        .find(|t| t.is_empty() || t.len() > limits.max_stop_len)
    {
        return Err(invalid(
            "stop",
            format!(
                "stop strings must have 1 to {} bytes, got {:?}",
                limits.max_stop_len, bad
            ),
        ));
    }
    if let Some(&id) = s
        .stop_token_ids
        .iter()
        .find(|&&id| id as usize >= limits.vocab_size)
    {
        return Err(invalid(
            "stop_token_ids",
            format!(
                "{id} is outside the vocabulary (size {})",
                limits.vocab_size
            ),
        ));
    }
    Ok(ValidRequest {
        request_id,
        prompt_ids,
        sampling,
        max_tokens,
        min_tokens,
        stop: s.stop.clone(),
        stop_token_ids: s.stop_token_ids.clone(),
        ignore_eos: s.ignore_eos.unwrap_or(false),
        n,
    })
}

/// The prompt as token ids: given directly, or tokenized (through the chat template if asked).
fn prompt_ids(
    req: &GenerateRequest,
    tokenizer: Option<&TextTokenizer>,
    chat: Option<&ChatTemplate>,
) -> Result<Vec<u32>, ValidationError> {
    match &req.input {
        None => Err(invalid("input", "give the prompt as text or token_ids")),
        Some(Input::TokenIds(ids)) => {
            if req.chat {
                return Err(invalid("chat", "chat needs a text prompt, not token ids"));
            }
            Ok(ids.ids.clone())
        }
        Some(Input::Text(text)) => {
            let tokenizer = tokenizer
                .ok_or_else(|| invalid("input", "this model has no tokenizer; send token_ids"))?;
            if text.is_empty() {
                return Err(invalid("input", "the prompt is empty"));
            }
            let tokenize = |e: crate::CoordinatorError| invalid("input", e.to_string());
            if req.chat {
                let template =
                    chat.ok_or_else(|| invalid("chat", "this model has no chat template"))?;
                let rendered = template
                    .render(
                        &[ChatMessage {
                            role: "user".into(),
                            content: text.clone(),
                        }],
                        true,
                    )
                    .map_err(|e| invalid("chat", e.to_string()))?;
                tokenizer.encode(&rendered, false).map_err(tokenize)
            } else {
                tokenizer.encode(text, true).map_err(tokenize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_proto::serving::{SamplingParams, TokenIds};

    fn limits() -> ValidationLimits {
        ValidationLimits::new(100, 32)
    }

    fn ids_request(ids: &[u32], sampling: SamplingParams) -> GenerateRequest {
        GenerateRequest {
            request_id: String::new(),
            input: Some(Input::TokenIds(TokenIds { ids: ids.to_vec() })),
            sampling: Some(sampling),
            chat: false,
        }
    }

    fn check(req: &GenerateRequest) -> Result<ValidRequest, ValidationError> {
        validate(req, &limits(), None, None, || "fresh".into())
    }

    #[test]
    fn fills_defaults_and_keeps_explicit_zeros() {
        let v = check(&ids_request(&[1, 2, 3], SamplingParams::default())).unwrap();
        assert_eq!(v.request_id, "fresh");
        assert_eq!(v.sampling.temperature, 1.0);
        assert_eq!(v.max_tokens, 29, "default capped by the context left");
        assert_eq!(v.n, 1);
        let greedy = SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(5),
            seed: Some(0),
            ..Default::default()
        };
        let v = check(&ids_request(&[1], greedy)).unwrap();
        assert_eq!(
            (v.sampling.temperature, v.max_tokens, v.sampling.seed),
            (0.0, 5, Some(0))
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(GenerateRequest, &str)> = vec![
            (ids_request(&[], SamplingParams::default()), "input"),
            (ids_request(&[1, 100], SamplingParams::default()), "input"),
            (ids_request(&[1; 32], SamplingParams::default()), "input"),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        max_tokens: Some(0),
                        ..Default::default()
                    },
                ),
                "max_tokens",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        max_tokens: Some(u32::MAX),
                        ..Default::default()
                    },
                ),
                "max_tokens",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        temperature: Some(f32::NAN),
                        ..Default::default()
                    },
                ),
                "temperature",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        temperature: Some(-0.5),
                        ..Default::default()
                    },
                ),
                "temperature",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        top_p: Some(0.0),
                        ..Default::default()
                    },
                ),
                "top_p",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        top_p: Some(1.5),
                        ..Default::default()
                    },
                ),
                "top_p",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        n: Some(0),
                        ..Default::default()
                    },
                ),
                "n",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        n: Some(1000),
                        ..Default::default()
                    },
                ),
                "n",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        stop_token_ids: vec![100],
                        ..Default::default()
                    },
                ),
                "stop_token_ids",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        stop: vec![String::new()],
                        ..Default::default()
                    },
                ),
                "stop",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        logprobs: Some(21),
                        ..Default::default()
                    },
                ),
                "logprobs",
            ),
            (
                ids_request(
                    &[1],
                    SamplingParams {
                        min_tokens: Some(9),
                        max_tokens: Some(3),
                        ..Default::default()
                    },
                ),
                "min_tokens",
            ),
            (
                GenerateRequest {
                    input: None,
                    ..ids_request(&[1], SamplingParams::default())
                },
                "input",
            ),
            (
                GenerateRequest {
                    chat: true,
                    ..ids_request(&[1], SamplingParams::default())
                },
                "chat",
            ),
            (
                GenerateRequest {
                    input: Some(Input::Text("hi".into())),
                    ..ids_request(&[1], SamplingParams::default())
                },
                "input",
            ),
        ];
        for (i, (req, field)) in cases.iter().enumerate() {
            let err = check(req).expect_err(&format!("case {i} should fail"));
            assert_eq!(err.field, *field, "case {i}: {err}");
        }
        // a normal request still validates after all of them
        assert!(check(&ids_request(&[1, 2], SamplingParams::default())).is_ok());
    }

    #[test]
    fn text_and_chat_prompts_are_tokenized() {
        let tokenizer = crate::demo::tokenizer().unwrap();
        let limits = ValidationLimits::new(tokenizer.vocab_size(), 256);
        let mut req = GenerateRequest {
            request_id: "r1".into(),
            input: Some(Input::Text("Hello there".into())),
            sampling: None,
            chat: false,
        };
        let plain = validate(&req, &limits, Some(&tokenizer), None, String::new).unwrap();
        assert_eq!(plain.request_id, "r1");
        assert_eq!(
            plain.prompt_ids,
            tokenizer.encode("Hello there", true).unwrap()
        );
        req.chat = true;
        let template = tokenizer.chat_template().cloned();
        let chat = validate(
            &req,
            &limits,
            Some(&tokenizer),
            template.as_ref(),
            String::new,
        )
        .unwrap();
        assert!(chat.prompt_ids.len() > plain.prompt_ids.len());
        let err = validate(&req, &limits, Some(&tokenizer), None, String::new).unwrap_err();
        assert_eq!(err.field, "chat");
    }
}
