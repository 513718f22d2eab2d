//! Sends one load point's requests through the client SDK: each request waits for its arrival
//! time, then for one of `concurrency` slots, and streams its tokens; the times of the first
//! token, of every later chunk and of the final message are recorded.

use super::metrics::RequestRecord;
use super::workload::WorkItem;
use bitnet_client::{Client, GenerateEvent, GenerateParams, Prompt, SamplingParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

/// Runs every item (arriving at `arrivals[i]` seconds) with at most `concurrency` in flight;
/// returns the records and the run's duration (first send → last end) in seconds.
pub async fn run_point(
    client: &Client,
    items: &[WorkItem],
    arrivals: &[f64],
    concurrency: usize,
) -> (Vec<RequestRecord>, f64) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(items.len());
    for (item, &at) in items.iter().zip(arrivals) {
        let (client, slots, item) = (client.clone(), slots.clone(), item.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
            let _slot = slots
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            one_request(&client, item, start).await
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        records.push(task.await.unwrap_or_else(|e| RequestRecord {
            error: Some(format!("load task failed: {e}")),
            ..Default::default()
        }));
    }
    let first = records
        .iter()
        .map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let last = records
        .iter()
        .map(|r| r.sent_s + r.e2el_s)
        .fold(0.0f64, f64::max);
    (records, if first.is_finite() { last - first } else { 0.0 })
}

/// Streams one request; never panics (failures become the record's error).
pub async fn one_request(client: &Client, item: WorkItem, start: Instant) -> RequestRecord {
    let sampling = SamplingParams::greedy()
        .max_tokens(item.output_len)
        .min_tokens(item.output_len)
        .ignore_eos(true);
    let params = match item.prompt {
        Prompt::Text(text) => GenerateParams::text(text),
        Prompt::TokenIds(ids) => GenerateParams::token_ids(ids),
    }
    .with_sampling(sampling);
    let sent = Instant::now();
    let mut record = RequestRecord {
        sent_s: (sent - start).as_secs_f64(),
        ..Default::default()
    };
    let mut last_chunk: Option<Instant> = None;
    let mut stream = client.generate(params);
    while let Some(event) = stream.next().await {
        match event {
            Ok(GenerateEvent::Chunk {
                token_ids, usage, ..
            }) => {
                record.prompt_tokens = usage.prompt_tokens as u64;
                if token_ids.is_empty() {
                    continue;
                }
                let now = Instant::now();
                match last_chunk {
                    None => record.ttft_s = Some((now - sent).as_secs_f64()),
                    Some(prev) => record.itl_s.push((now - prev).as_secs_f64()),
                }
                last_chunk = Some(now);
            }
            Ok(GenerateEvent::Complete { usage, .. }) => {
                record.prompt_tokens = usage.prompt_tokens as u64;
                record.output_tokens = usage.completion_tokens as u64;
            }
            Err(e) => {
                record.error = Some(e.to_string());
                break;
            }
        }
    }
    record.e2el_s = sent.elapsed().as_secs_f64();
    if record.error.is_none() && record.output_tokens == 0 {
        record.error = Some("the stream ended without a final message".into());
    }
    record
}
