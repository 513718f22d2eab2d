//! Sampling on the device (`kernels/cuda/sample.cu`): one token per row of logits that stay on
//! the GPU, so only token ids (and the logprobs a request asked for) cross to the host.
//!
//! Greedy rows use `argmax_rows` (the first index of the largest logit). Temperature / top-k /
//! top-p rows use `sample_rows`, which follows `bitnet-worker`'s `Sampler` (candidates in the
//! order (logit / T desc, id asc), top-k, softmax, the shortest top-p prefix, inverse CDF at a
//! uniform `r`); the caller draws `r` from the request's own ChaCha8 stream on the host (the
//! draw the CPU sampler makes), so the random stream is the CPU's. The kernel sums fixed-point
//! masses exactly instead of f32 running sums (see sample.cu for what that can change).
//! Logprobs are the log-softmax of the raw logits (f32 exponentials summed in f64), for the
//! sampled token and the top n (at most [`SAMPLE_MAX_LOGPROBS`]).

use super::ops::{launch_err, DeviceOps};
use super::CudaError;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Most top logprobs one row can return (SAMPLE_MAX_LOGPROBS in sample.cu).
pub const SAMPLE_MAX_LOGPROBS: usize = 32;
/// Threads per row of `sample_rows` (SAMPLE_THREADS in sample.cu).
const SAMPLE_THREADS: u32 = 512;

/// How to pick the token of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRow {
    /// 0: greedy; otherwise the logits are divided by it.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: u32,
    /// Keep the shortest prefix holding `top_p` of the mass (1: all).
    pub top_p: f32,
    /// The uniform draw in [0, 1) that picks the token (unused when greedy).
    pub r: f32,
    /// Return the token's logprob and this many top alternatives (`None`: no logprobs).
    pub logprobs: Option<u32>,
}

impl SampleRow {
    /// Greedy, no logprobs.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            r: 0.0,
            logprobs: None,
        }
    }

    fn check(&self) -> Result<(), CudaError> {
        let bad = |reason: String| CudaError::Shape {
            op: "sample_rows",
            reason,
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(bad(format!("temperature {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad(format!("top_p {}", self.top_p)));
        }
        if !(0.0..1.0).contains(&self.r) {
            return Err(bad(format!("uniform draw {} outside [0, 1)", self.r)));
        }
        match self.logprobs {
            Some(n) if n as usize > SAMPLE_MAX_LOGPROBS => Err(bad(format!(
                "{n} top logprobs asked, at most {SAMPLE_MAX_LOGPROBS} on the device"
            ))),
            _ => Ok(()),
        }
    }

    /// The 5 words `sample_rows` reads.
    fn words(&self) -> [u32; 5] {
        [
            self.temperature.to_bits(),
            self.top_k,
            self.top_p.to_bits(),
            self.r.to_bits(),
            self.logprobs.map_or(u32::MAX, |n| n), // -1 as i32: none
        ]
    }
}

/// The token picked for one row and, when asked, its logprob and the top alternatives
/// (highest first, lower id first on ties).
#[derive(Clone, Debug, PartialEq)]
pub struct SampledRow {
    pub token: u32,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

impl DeviceOps<'_> {
    /// Picks one token for each of the `rows.len()` rows of `logits` (`vocab` wide) and
    /// downloads only the ids (and the logprobs rows asked for).
    pub fn sample_rows(
        &self,
        logits: &CudaSlice<f32>,
        vocab: usize,
        rows: &[SampleRow],
    ) -> Result<Vec<SampledRow>, CudaError> {
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if vocab == 0 || logits.len() < n * vocab {
            return Err(CudaError::Shape {
                op: "sample_rows",
                reason: format!("{n} rows of {vocab} logits from {} floats", logits.len()),
            });
        }
        for r in rows {
            r.check()?;
        }
        let err = |what: &'static str| move |e| CudaError::driver(what, e);
        let mut ids = self
            .stream
            .alloc_zeros::<u32>(n)
            .map_err(err("allocating sampled ids"))?;
        let simple = rows
            .iter()
            .all(|r| r.temperature == 0.0 && r.logprobs.is_none());
        if simple {
            self.argmax_rows(logits, vocab, &mut ids)?;
            let host = self.download(&ids)?;
            return Ok(host
                .into_iter()
                .map(|token| SampledRow {
                    token,
                    logprob: None,
                    top: Vec::new(),
                })
                .collect());
        }
        let words: Vec<u32> = rows.iter().flat_map(|r| r.words()).collect();
        let params = self
            .stream
            .clone_htod(&words)
            .map_err(err("uploading sampling parameters"))?;
        let mut lp = self
            .stream
            .alloc_zeros::<f32>(n)
            .map_err(err("allocating logprobs"))?;
        let mut top_ids = self
            .stream
            .alloc_zeros::<u32>(n * SAMPLE_MAX_LOGPROBS)
            .map_err(err("allocating top ids"))?;
        let mut top_lp = self
            .stream
            .alloc_zeros::<f32>(n * SAMPLE_MAX_LOGPROBS)
            .map_err(err("allocating top logprobs"))?;
        let f = self.kernels.get("sample_rows")?;
        let cols = vocab as i32;
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (SAMPLE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument list matches sample_rows; buffers sized above.
        unsafe {
            self.stream
                .launch_builder(f)
                .arg(logits)
                .arg(&params)
                .arg(&cols)
                .arg(&mut ids)
                .arg(&mut lp)
                .arg(&mut top_ids)
                .arg(&mut top_lp)
                .launch(cfg)
        }
        .map_err(launch_err("sample_rows"))?;
        let tokens = self.download(&ids)?;
        let any_logprobs = rows.iter().any(|r| r.logprobs.is_some());
        let (lp, top_ids, top_lp) = if any_logprobs {
            (
                self.download(&lp)?,
                self.download(&top_ids)?,
                self.download(&top_lp)?,
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        Ok(rows
            .iter()
            .zip(tokens)
            .enumerate()
            .map(|(i, (r, token))| match r.logprobs {
                None => SampledRow {
                    token,
                    logprob: None,
                    top: Vec::new(),
                },
                Some(k) => {
                    let k = (k as usize).min(vocab);
                    let at = i * SAMPLE_MAX_LOGPROBS;
                    SampledRow {
                        token,
                        logprob: Some(lp[i]),
                        top: top_ids[at..at + k]
                            .iter()
                            .copied()
                            .zip(top_lp[at..at + k].iter().copied())
                            .collect(),
                    }
                }
            })
            .collect())
    }

    /// Copies a device buffer to a new host vector and waits for it.
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
    ) -> Result<Vec<T>, CudaError> {
        let mut host = vec![T::default(); dev.len()];
        self.stream
            .memcpy_dtoh(dev, &mut host)
            .map_err(|e| CudaError::driver("copying to the host", e))?;
        self.stream
            .synchronize()
            .map_err(|e| CudaError::driver("synchronizing", e))?;
        Ok(host)
    }
}
