//! The requests of a load run: random token-id prompts of `--input-len` (drawn with a seeded
//! generator, so two runs send the same prompts) or the lines of a `--dataset` JSONL file, and
//! their arrival times (Poisson at `--request-rate`, or all at once for `inf`).

use anyhow::{bail, Context, Result};
use bitnet_client::Prompt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// One request to send.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkItem {
    pub prompt: Prompt,
    /// `max_tokens` (and `min_tokens`, with EOS ignored, so every request generates exactly this).
    pub output_len: u32,
}

/// `n` prompts of `input_len` random ids below `vocab` (ids 0..3, usually special, avoided).
pub fn random_prompts(
    n: usize,
    input_len: usize,
    output_len: u32,
    vocab: u32,
    seed: u64,
) -> Vec<WorkItem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lo = 3.min(vocab.saturating_sub(1));
    (0..n)
        .map(|_| WorkItem {
            prompt: Prompt::TokenIds(
                (0..input_len)
                    .map(|_| rng.random_range(lo..vocab))
                    .collect(),
            ),
            output_len,
        })
        .collect()
}

/// Reads a JSONL dataset: one object per line with `prompt` (text) or `prompt_token_ids`, and an
/// optional `output_len` (default `default_output_len`). The first `n` lines are used, cycled
/// when the file has fewer.
pub fn dataset_prompts(path: &Path, n: usize, default_output_len: u32) -> Result<Vec<WorkItem>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let where_ = || format!("{} line {}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(where_)?;
        let prompt = if let Some(t) = v.get("prompt").and_then(|t| t.as_str()) {
            Prompt::Text(t.to_string())
        } else if let Some(ids) = v.get("prompt_token_ids").and_then(|t| t.as_array()) {
            let ids: Option<Vec<u32>> = ids
                .iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect();
            Prompt::TokenIds(ids.with_context(|| {
                format!(
                    "{}: prompt_token_ids must be unsigned 32-bit integers",
                    where_()
                )
            })?)
        } else {
            bail!(
                "{}: expected a \"prompt\" string or a \"prompt_token_ids\" array",
                where_()
            );
        };
        let output_len = match v.get("output_len") {
            None => default_output_len,
            Some(x) => x
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .filter(|&x| x > 0)
                .with_context(|| format!("{}: output_len must be a positive integer", where_()))?,
        };
        items.push(WorkItem { prompt, output_len });
    }
    if items.is_empty() {
        bail!("{}: no requests in the dataset", path.display());
    }
    Ok((0..n).map(|i| items[i % items.len()].clone()).collect())
}

/// Seconds after the start at which each of `n` requests arrives: all at 0 for an infinite
/// rate, else a Poisson process (exponential gaps of mean `1 / rate`).
pub fn arrival_times(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    if !rate.is_finite() {
        return vec![0.0; n];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            let at = t;
            let u: f64 = rng.random::<f64>();
            t += -(1.0 - u).ln() / rate;
            at
        })
        .collect()
}

/// Parses `--request-rate` values: positive numbers or `inf`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    if s.eq_ignore_ascii_case("inf") {
        return Ok(f64::INFINITY);
    }
    s.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("request rate {s:?}: expected a positive number or inf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_seeded_and_in_range() {
        let a = random_prompts(4, 16, 8, 100, 7);
        assert_eq!(a, random_prompts(4, 16, 8, 100, 7));
        assert_ne!(a, random_prompts(4, 16, 8, 100, 8));
        for item in &a {
            let Prompt::TokenIds(ids) = &item.prompt else {
                panic!("token ids expected")
            };
            assert_eq!(ids.len(), 16);
            assert!(ids.iter().all(|&id| (3..100).contains(&id)));
        }
    }

    #[test]
    fn poisson_arrivals_have_the_requested_mean_rate() {
        let t = arrival_times(4000, 20.0, 1);
        assert_eq!(t[0], 0.0);
        assert!(t.windows(2).all(|w| w[1] >= w[0]));
        let rate = (t.len() - 1) as f64 / t[t.len() - 1];
        assert!((rate - 20.0).abs() < 1.5, "measured rate {rate}");
        assert_eq!(arrival_times(3, f64::INFINITY, 1), vec![0.0; 3]);
        assert!(parse_rate("0").is_err() && parse_rate("x").is_err());
        assert_eq!(parse_rate("INF").unwrap(), f64::INFINITY);
    }

    #[test]
    fn dataset_lines_are_read_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"hi\"}\n\n{\"prompt_token_ids\": [1, 2], \"output_len\": 3}\n",
        )
        .unwrap();
        let items = dataset_prompts(&path, 3, 9).unwrap();
        assert_eq!(
            items[0],
            WorkItem {
                prompt: Prompt::Text("hi".into()),
                output_len: 9
            }
        );
        assert_eq!(
            items[1],
            WorkItem {
                prompt: Prompt::TokenIds(vec![1, 2]),
                output_len: 3
            }
        );
        assert_eq!(items[2], items[0]);
        std::fs::write(&path, "{\"text\": 1}\n").unwrap();
        let err = dataset_prompts(&path, 1, 9).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
