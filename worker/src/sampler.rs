//! [`Sampler`]: picks the next token from logits — greedy (temperature 0) or seeded sampling
//! with temperature, top-k and top-p (applied in that order, as transformers' warpers do).

use crate::error::WorkerError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to pick tokens. `temperature == 0` is greedy; `top_k == 0` and `top_p == 1` are off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// Seed of the random generator; `None` draws one from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(WorkerError::Sampling {
                name: "temperature",
                message: format!("must be a finite number >= 0, got {}", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(WorkerError::Sampling {
                name: "top_p",
                message: format!("must be in (0, 1], got {}", self.top_p),
            });
        }
        Ok(())
    }
}

/// A token picker with its own random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for validated parameters.
    pub fn new(params: SamplingParams) -> Result<Self, WorkerError> {
        params.validate()?;
        let rng = match params.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_rng(&mut rand::rng()),
        };
        Ok(Self { params, rng })
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The uniform draw in [0, 1) that [`Sampler::sample`] would make for its next pick: one
    /// f32 from the stream for temperature > 0, none (`None`) for greedy. A sampler on a
    /// device takes its draws here, so it consumes the very stream the CPU sampler does.
    pub fn next_uniform(&mut self) -> Option<f32> {
        (self.params.temperature != 0.0).then(|| self.rng.random())
    }

    /// Picks the next token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let t = self.params.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / t))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            candidates.truncate(self.params.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            // keep the smallest prefix whose mass reaches top_p (at least one token)
            let mut mass = 0.0f32;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r: f32 = self.rng.random();
        let mut acc = 0.0f32;
        for (c, p) in candidates.iter().zip(&probs) {
            acc += p;
            if r < acc {
                return c.0;
            }
        }
        candidates[probs.len() - 1].0
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: Some(seed),
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits = [0.5f32, 2.0, 1.9, -3.0, 1.0];
        let mut s = Sampler::new(params(1.0, 1, 1.0, 7)).unwrap();
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed)).unwrap();
            (0..32).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4), "different seeds give different streams");
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // softmax of [10, 9.9, 0, 0]: the first two hold > 99.9% of the mass.
        let logits = [10.0f32, 9.9, 0.0, 0.0];
        let mut s = Sampler::new(params(1.0, 0, 0.9, 11)).unwrap();
        let picks: Vec<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(picks.iter().all(|&p| p < 2));
        assert!(picks.contains(&0) && picks.contains(&1));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([ln 3, 0]) = [0.75, 0.25]
        let logits = [3f32.ln(), 0.0];
        let mut s = Sampler::new(params(1.0, 0, 1.0, 5)).unwrap();
        let zeros = (0..4000).filter(|_| s.sample(&logits) == 0).count();
        assert!((2800..3200).contains(&zeros), "{zeros} of 4000");
    }

    #[test]
    fn next_uniform_is_the_draw_sample_makes() {
        let logits = [0.3f32, 1.0, -0.5, 0.9];
        let mut a = Sampler::new(params(0.7, 0, 1.0, 21)).unwrap();
        let mut b = a.clone();
        for _ in 0..50 {
            let r = b.next_uniform().expect("temperature > 0 draws");
            let token = a.sample(&logits);
            // The inverse CDF at r over the sorted softmax reproduces the pick.
            let mut order: Vec<usize> = (0..4).collect();
            order.sort_by(|&x, &y| (logits[y] / 0.7).total_cmp(&(logits[x] / 0.7)));
            let w: Vec<f32> = order
                .iter()
                .map(|&i| (logits[i] / 0.7 - logits[order[0]] / 0.7).exp())
                .collect();
            let total: f32 = w.iter().sum();
            let mut acc = 0.0f32;
            let pick = order
                .iter()
                .zip(&w)
                .find(|(_, &p)| {
                    acc += p / total;
                    r < acc
                })
                .map_or(order[3], |(&i, _)| i);
            assert_eq!(pick as u32, token);
        }
        let mut greedy = Sampler::new(params(0.0, 0, 1.0, 21)).unwrap();
        assert_eq!(greedy.next_uniform(), None);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(f32::NAN, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 1.5, 0)).is_err());
    }
}
