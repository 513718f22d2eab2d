//! Sampling on the GPU (feature `cuda`: `bitnet_kernels::cuda::DeviceOps::sample_rows`, what
//! the CUDA model's `forward_sample` calls) against the CPU sampler and logprobs of this crate:
//! - greedy: the device ids equal `sampler::argmax` bit for bit (rows with ties, odd and
//!   128k vocabularies), through `argmax_rows` and through `sample_rows` (greedy with logprobs);
//! - logprobs: the top-n ids equal `token_logprobs`'s, the logprobs within `1e-5 + 1e-6·|lp|`
//!   (f32 exponentials of the device vs the host, f64 sums in another order);
//! - seeded temperature / top-k / top-p: fed the uniform draws of the CPU sampler's own ChaCha8
//!   stream (`Sampler::next_uniform`), the device picks the token of the sampler's semantics
//!   computed exactly (f64 on the host) in at least 99.9% of draws, and the CPU sampler's unless
//!   r lies between a CDF boundary and the CPU's f32-rounded copy of it: at least 99% of draws
//!   where the kept set is small (top-k ≤ 50, or 320 tokens), at least 75% over a whole 32k
//!   vocabulary (thousands of boundaries; another random stream would agree on a few percent);
//!   top-k 1 is greedy, top-p never leaves the nucleus;
//! - distribution: 4000 draws of softmax([ln 3, 0]) give token 0 in 2800..3200 of them, and a
//!   10-token softmax within 5 σ per token.
//!
//! Without a GPU the tests print why they skipped and pass; with `BITNET_REQUIRE_CUDA=1` a
//! missing GPU is a failure. Prints `sampling_cuda: <what>: <N> cases`.
#![cfg(feature = "cuda")]

use bitnet_kernels::cuda::{CudaBackend, SampleRow, SampledRow};
use bitnet_worker::sampler::argmax;
use bitnet_worker::{token_logprobs, Sampler, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("BITNET_REQUIRE_CUDA").map_or(true, |v| v != "1"),
                "BITNET_REQUIRE_CUDA=1 but {e}"
            );
            println!("sampling_cuda: skipped, no CUDA backend: {e}");
            None
        }
    }
}

/// Rows of logits with deliberate ties (copies of the maximum at a later index).
fn logit_rows(rng: &mut ChaCha8Rng, rows: usize, vocab: usize, scale: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..rows * vocab)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    for (i, row) in v.chunks_exact_mut(vocab).enumerate() {
        if i % 3 == 1 {
            let m = argmax(row) as usize;
            let j = (m + 1 + i * 7) % vocab;
            row[j.max(m + 1).min(vocab - 1)] = row[m]; // a tie after the first maximum
        }
    }
    v
}

fn sample(b: &CudaBackend, logits: &[f32], vocab: usize, rows: &[SampleRow]) -> Vec<SampledRow> {
    let d = b.upload(logits).expect("upload");
    b.ops().sample_rows(&d, vocab, rows).expect("sample_rows")
}

#[test]
fn greedy_ids_equal_the_cpu_argmax_and_logprobs_match() {
    let Some(b) = backend() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut greedy_cases, mut logprob_cases) = (0, 0);
    for vocab in [2usize, 320, 1001, 32000, 128_256] {
        let rows = 7;
        let logits = logit_rows(&mut rng, rows, vocab, 8.0);
        let want: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
        let got = sample(&b, &logits, vocab, &vec![SampleRow::greedy(); rows]);
        assert_eq!(
            got.iter().map(|g| g.token).collect::<Vec<_>>(),
            want,
            "argmax_rows, vocab {vocab}"
        );
        greedy_cases += rows;
        let n = 5.min(vocab) as u32;
        let with_lp = SampleRow {
            logprobs: Some(n),
            ..SampleRow::greedy()
        };
        let got = sample(&b, &logits, vocab, &vec![with_lp; rows]);
        for (r, (row, g)) in logits.chunks_exact(vocab).zip(&got).enumerate() {
            assert_eq!(
                g.token, want[r],
                "sample_rows greedy, vocab {vocab} row {r}"
            );
            let cpu = token_logprobs(row, g.token, n as usize);
            let lp = g.logprob.expect("logprob asked");
            let close = |a: f32, c: f32| (a - c).abs() <= 1e-5 + 1e-6 * c.abs();
            assert!(
                close(lp, cpu.logprob),
                "vocab {vocab} row {r}: {lp} vs {}",
                cpu.logprob
            );
            let ids: Vec<u32> = g.top.iter().map(|t| t.0).collect();
            let cpu_ids: Vec<u32> = cpu.top.iter().map(|t| t.0).collect();
            assert_eq!(ids, cpu_ids, "top ids, vocab {vocab} row {r}");
            for ((_, a), (_, c)) in g.top.iter().zip(&cpu.top) {
                assert!(close(*a, *c), "top logprob {a} vs {c}");
            }
            greedy_cases += 1;
            logprob_cases += 1;
        }
    }
    println!("sampling_cuda: greedy: {greedy_cases} cases, logprobs: {logprob_cases} cases");
}

#[test]
fn seeded_sampling_follows_the_cpu_stream() {
    let Some(b) = backend() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let configs = [
        (0.7f32, 0usize, 1.0f32),
        (1.0, 40, 1.0),
        (1.3, 0, 0.9),
        (0.9, 50, 0.8),
        (1.0, 1, 1.0),
    ];
    // (draws, equal) where the kept set is small (top-k ≤ 50, or a 320-token vocabulary), and
    // where it spans a 32k vocabulary (thousands of CDF boundaries, each moved by the CPU's f32
    // running sums: several percent of draws may land between the two).
    let (mut narrow, mut wide) = ((0usize, 0usize), (0usize, 0usize));
    let mut exact = (0usize, 0usize);
    for vocab in [320usize, 32000] {
        for &(temperature, top_k, top_p) in &configs {
            let params = SamplingParams {
                temperature,
                top_k,
                top_p,
                seed: Some(vocab as u64 + top_k as u64),
            };
            let mut cpu = Sampler::new(params).unwrap();
            let mut draws = cpu.clone();
            let rows = 64;
            let logits = logit_rows(&mut rng, rows, vocab, 4.0);
            let sample_rows: Vec<SampleRow> = (0..rows)
                .map(|_| SampleRow {
                    temperature,
                    top_k: top_k as u32,
                    top_p,
                    r: draws.next_uniform().expect("temperature > 0"),
                    logprobs: None,
                })
                .collect();
            let got = sample(&b, &logits, vocab, &sample_rows);
            let bucket = if (1..=50).contains(&top_k) || vocab <= 1000 {
                &mut narrow
            } else {
                &mut wide
            };
            for ((row, g), sr) in logits.chunks_exact(vocab).zip(&got).zip(&sample_rows) {
                let want = cpu.sample(row);
                bucket.0 += 1;
                bucket.1 += usize::from(want == g.token);
                exact.0 += 1;
                exact.1 += usize::from(exact_pick(row, sr) == g.token);
                if top_k == 1 {
                    assert_eq!(g.token, argmax(row), "top-k 1 is greedy");
                }
            }
        }
    }
    println!(
        "sampling_cuda: seeded stream: {} of {} narrow draws and {} of {} wide draws equal the CPU's",
        narrow.1, narrow.0, wide.1, wide.0
    );
    println!(
        "sampling_cuda: seeded stream: {} of {} draws equal the exact (f64) pick",
        exact.1, exact.0
    );
    assert!(exact.1 * 1000 >= exact.0 * 999, "exact: {exact:?}");
    assert!(narrow.1 * 100 >= narrow.0 * 99, "narrow: {narrow:?}");
    // A different random stream would agree on about Σ p² of the draws (well under 10%).
    assert!(wide.1 * 4 >= wide.0 * 3, "wide: {wide:?}");
}

/// The pick of the sampler's semantics in f64 (what the device computes exactly, up to its f32
/// exponentials): candidates by (logit / T desc, id asc), top-k, the shortest top-p prefix,
/// the first candidate whose running mass exceeds r · kept mass.
fn exact_pick(row: &[f32], p: &SampleRow) -> u32 {
    let mut c: Vec<(f32, u32)> = row
        .iter()
        .enumerate()
        .map(|(i, &l)| (l / p.temperature, i as u32))
        .collect();
    c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if p.top_k > 0 {
        c.truncate(p.top_k as usize);
    }
    let max = c[0].0;
    let w: Vec<f64> = c.iter().map(|x| f64::from(x.0 - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut keep = w.len();
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        for (i, &x) in w.iter().enumerate() {
            cum += x;
            if cum >= f64::from(p.top_p) * total {
                keep = i + 1;
                break;
            }
        }
    }
    let target = f64::from(p.r) * w[..keep].iter().sum::<f64>();
    let mut cum = 0.0;
    for (x, cand) in w[..keep].iter().zip(&c) {
        cum += x;
        if cum > target {
            return cand.1;
        }
    }
    c[keep - 1].1
}

#[test]
fn temperature_sampling_follows_the_distribution() {
    let Some(b) = backend() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // softmax([ln 3, 0]) = [0.75, 0.25]
    let n = 4000;
    let logits: Vec<f32> = (0..n).flat_map(|_| [3f32.ln(), 0.0]).collect();
    let rows: Vec<SampleRow> = (0..n)
        .map(|_| SampleRow {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            r: rng.random(),
            logprobs: None,
        })
        .collect();
    let zeros = sample(&b, &logits, 2, &rows)
        .iter()
        .filter(|g| g.token == 0)
        .count();
    assert!((2800..3200).contains(&zeros), "{zeros} of {n}");
    // Ten tokens at temperature 0.5: every frequency within 5 σ of its probability; top-p 0.5
    // keeps only the nucleus.
    let base: Vec<f32> = (0..10).map(|i| (i as f32) * 0.15).collect();
    let t = 0.5f32;
    let w: Vec<f64> = base
        .iter()
        .map(|&l| f64::from((l / t - base[9] / t).exp()))
        .collect();
    let z: f64 = w.iter().sum();
    let n = 20_000;
    let logits: Vec<f32> = (0..n).flat_map(|_| base.clone()).collect();
    let rows: Vec<SampleRow> = (0..n)
        .map(|_| SampleRow {
            temperature: t,
            top_k: 0,
            top_p: 1.0,
            r: rng.random(),
            logprobs: None,
        })
        .collect();
    let mut counts = [0usize; 10];
    for g in sample(&b, &logits, 10, &rows) {
        counts[g.token as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = w[i] / z;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - n as f64 * p).abs() <= 5.0 * sigma + 1.0,
            "token {i}: {c} draws, expected {:.0} ± {sigma:.0}",
            n as f64 * p
        );
    }
    let nucleus: Vec<SampleRow> = rows
        .iter()
        .map(|r| SampleRow { top_p: 0.5, ..*r })
        .collect();
    // The nucleus of mass 0.5: the largest tokens whose cumulative probability first reaches it.
    let mut cum = 0.0;
    let keep = (0..10).rev().take_while(|&i| {
        let before = cum;
        cum += w[i] / z;
        before < 0.5
    });
    let kept: Vec<u32> = keep.map(|i| i as u32).collect();
    let picks = sample(&b, &logits, 10, &nucleus);
    assert!(
        picks.iter().all(|g| kept.contains(&g.token)),
        "top-p left the nucleus {kept:?}"
    );
    println!("sampling_cuda: distribution: 3 cases");
}
