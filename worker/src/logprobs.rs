//! [`TokenLogprobs`]: the log-probability of a sampled token and the top-n alternatives, from
//! one row of raw logits (before temperature, top-k or top-p: the model's own distribution, as
//! vLLM reports by default).
//!
//! `logprob(i) = (l_i − max) − ln Σ_j exp(l_j − max)`: the exponentials are f32 (each in
//! (0, 1]) summed in f64, so the normalizer keeps full precision over a 128k vocabulary. The
//! [`crate::StepRunner`] computes them only for sequences that asked.

/// The logprob of one sampled token and the `n` most likely tokens (highest first, ties by
/// lower id).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub token_id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Log-softmax of `logits` at `token` and at the `top_n` largest logits.
pub fn token_logprobs(logits: &[f32], token: u32, top_n: usize) -> TokenLogprobs {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_z = sum.ln();
    let logprob = |l: f32| (f64::from(l - max) - log_z) as f32;
    TokenLogprobs {
        token_id: token,
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&l| logprob(l)),
        top: top_ids(logits, top_n)
            .into_iter()
            .map(|i| (i, logprob(logits[i as usize])))
            .collect(),
    }
}

/// Ids of the `n` largest logits, largest first (lower id first on ties); one pass with a small
/// sorted buffer, no allocation of the vocabulary's size.
fn top_ids(logits: &[f32], n: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return Vec::new();
    }
    for (i, &l) in logits.iter().enumerate() {
        if top.len() == n && l <= top[n - 1].0 {
            continue;
        }
        // First position whose logit is lower: equal logits keep the earlier (lower) id first.
        let at = top.partition_point(|&(t, _)| t >= l);
        top.insert(at, (l, i as u32));
        top.truncate(n);
    }
    top.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_normalized_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let lp = token_logprobs(&logits, 2, 3);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((f64::from(lp.logprob) - (2.0 - z.ln())).abs() < 1e-6);
        // Ties keep the lower id first.
        assert_eq!(
            lp.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        let total: f64 = (0..4)
            .map(|i| f64::from(token_logprobs(&logits, i, 0).logprob).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn large_vocabularies_and_extreme_logits_stay_finite() {
        let mut logits = vec![-1e4f32; 128_256];
        logits[7] = 50.0;
        logits[9] = 49.0;
        let lp = token_logprobs(&logits, 9, 2);
        assert_eq!(lp.top[0].0, 7);
        assert!((lp.top[0].1 - -(1.0f64 + (-1.0f64).exp()).ln() as f32).abs() < 1e-5);
        assert!((lp.logprob - (-1.0 - (1.0f64 + (-1.0f64).exp()).ln() as f32)).abs() < 1e-5);
        assert!(token_logprobs(&logits, 0, 0).logprob.is_finite());
    }
}
