//! `bitnet-cluster generate --server ADDR`: the same flags and `--json` output as the offline
//! `generate`, sent to a running server through the client SDK. Text deltas are printed as they
//! stream in (without `--json`); speeds come from the time to the first token (prefill) and the
//! time after it (decode).

use crate::error::CoordinatorError;
use crate::generate::{GenerateOptions, GenerateOutput, Prompt};
use bitnet_client::{Client, ClientOptions, GenerateEvent, GenerateParams, SamplingParams};
use std::io::Write;
use std::time::Instant;
use tokio_stream::StreamExt;

fn remote(e: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::Server(e.to_string())
}

/// Runs one generation on the server at `addr`; prints text deltas when `echo` is set.
pub fn run_remote(
    addr: &str,
    opts: &GenerateOptions,
    echo: bool,
) -> Result<GenerateOutput, CoordinatorError> {
    if opts.dump_logits.is_some() || opts.lm_head_int8 {
        return Err(CoordinatorError::InvalidRequest(
            "--dump-logits and --lm-head int8 run only offline (without --server); a server's head is set by `up --lm-head`".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CoordinatorError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let client = Client::connect(addr, ClientOptions::default())
            .await
            .map_err(remote)?;
        let mut sampling = SamplingParams::new()
            .temperature(opts.sampling.temperature)
            .top_p(opts.sampling.top_p)
            .top_k(opts.sampling.top_k as u32)
            .max_tokens(opts.max_new_tokens as u32);
        if let Some(seed) = opts.sampling.seed {
            sampling = sampling.seed(seed);
        }
        if let Some(n) = opts.logprobs {
            sampling = sampling.logprobs(n);
        }
        let (params, prompt_ids) = match &opts.prompt {
            Prompt::Ids(ids) => (GenerateParams::token_ids(ids.clone()), ids.clone()),
            Prompt::Text(text) => {
                // The ids the server will see (unknown here for a chat prompt).
                let ids = if opts.chat {
                    Vec::new()
                } else {
                    client.tokenize(text.clone(), true).await.map_err(remote)?
                };
                (GenerateParams::text(text.clone()).with_chat(opts.chat), ids)
            }
        };
        let start = Instant::now();
        let mut first_token = None;
        let mut text = String::new();
        let mut all_logprobs = Vec::new();
        let mut stream = client.generate(params.with_sampling(sampling));
        while let Some(event) = stream.next().await {
            match event.map_err(remote)? {
                GenerateEvent::Chunk {
                    text: delta,
                    token_ids,
                    logprobs,
                    ..
                } => {
                    all_logprobs.extend(logprobs);
                    if first_token.is_none() && !token_ids.is_empty() {
                        first_token = Some(start.elapsed().as_secs_f64());
                    }
                    if echo {
                        print!("{delta}");
                        let _ = std::io::stdout().flush();
                    }
                    text.push_str(&delta);
                }
                GenerateEvent::Complete {
                    output_ids,
                    finish_reason,
                    usage,
                    ..
                } => {
                    if echo {
                        println!();
                    }
                    let total = start.elapsed().as_secs_f64();
                    let ttft = first_token.unwrap_or(total);
                    let rate = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
                    return Ok(GenerateOutput {
                        prefill_tokens_per_s: rate(usage.prompt_tokens as f64, ttft),
                        decode_tokens_per_s: rate(
                            output_ids.len().saturating_sub(1) as f64,
                            total - ttft,
                        ),
                        prompt_ids,
                        token_ids: output_ids,
                        text,
                        finish_reason: finish_reason.as_str().to_string(),
                        logprobs: opts.logprobs.map(|_| all_logprobs),
                    });
                }
            }
        }
        Err(CoordinatorError::Server(
            "the stream ended without a final message".into(),
        ))
    })
}
