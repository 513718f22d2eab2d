//! Per-request records of a load run and the summary `vllm bench serve` prints, with its metric
//! names and definitions:
//! - TTFT: request sent → first generated token received;
//! - TPOT: `(e2el − ttft) / (output tokens − 1)` per request with more than one output token;
//! - ITL: every gap between two consecutive streamed chunks carrying tokens;
//! - E2EL: request sent → final message;
//! - throughputs over the run's duration (first request sent → last request ended);
//! - goodput: requests per second that met every given SLO.

use serde::Serialize;

/// What happened to one request (times in seconds from the run's start).
#[derive(Clone, Debug, Default)]
pub struct RequestRecord {
    /// `None` when the request succeeded.
    pub error: Option<String>,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub sent_s: f64,
    /// Seconds from sending to the first token.
    pub ttft_s: Option<f64>,
    /// Seconds from sending to the final message.
    pub e2el_s: f64,
    /// Gaps between consecutive token-carrying chunks.
    pub itl_s: Vec<f64>,
}

impl RequestRecord {
    /// Time per output token after the first, when there is more than one.
    pub fn tpot_s(&self) -> Option<f64> {
        let ttft = self.ttft_s?;
        (self.output_tokens > 1).then(|| (self.e2el_s - ttft) / (self.output_tokens - 1) as f64)
    }
}

/// Service-level objectives in milliseconds (`--goodput ttft:500,tpot:50,e2el:3000`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// Parses `name:ms` pairs separated by commas; names are ttft, tpot and e2el.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| format!("goodput SLO {part:?}: expected NAME:MILLISECONDS"))?;
            let ms: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    format!("goodput SLO {part:?}: {value:?} is not a positive number")
                })?;
            match name.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2el" => slo.e2el_ms = Some(ms),
                other => return Err(format!("goodput SLO {other:?}: known are ttft, tpot, e2el")),
            }
        }
        Ok(slo)
    }

    fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }

    /// Whether a successful request met every objective.
    fn met_by(&self, r: &RequestRecord) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>| match (limit, value) {
            (Some(l), Some(v)) => v * 1e3 <= l,
            (Some(_), None) => false,
            (None, _) => true,
        };
        within(self.ttft_ms, r.ttft_s)
            && within(self.tpot_ms, r.tpot_s().or(Some(0.0)))
            && within(self.e2el_ms, Some(r.e2el_s))
    }
}

/// Mean, median, p90 and p99 of one metric, in milliseconds (`null` with no samples).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub mean_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Distribution {
    /// Summarizes samples given in seconds (linear interpolation between order statistics, as
    /// numpy's default percentile).
    pub fn of_seconds(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|s| s * 1e3).collect();
        v.sort_by(f64::total_cmp);
        Self {
            mean_ms: Some(v.iter().sum::<f64>() / v.len() as f64),
            median_ms: Some(percentile(&v, 50.0)),
            p90_ms: Some(percentile(&v, 90.0)),
            p99_ms: Some(percentile(&v, 99.0)),
        }
    }
}

/// The `p`-th percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The summary of one load point. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServeSummary {
    pub completed: usize,
    pub failed: usize,
    /// The first few distinct error messages.
    pub errors: Vec<String>,
    pub duration_s: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Requests per second that met every SLO (`null` without `--goodput`).
    pub goodput: Option<f64>,
    pub ttft: Distribution,
    pub tpot: Distribution,
    pub itl: Distribution,
    pub e2el: Distribution,
}

impl ServeSummary {
    /// Summarizes the records of one run that lasted `duration_s`.
    pub fn of(records: &[RequestRecord], duration_s: f64, slo: &Slo) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
        let mut errors: Vec<String> = Vec::new();
        for e in records.iter().filter_map(|r| r.error.as_ref()) {
            if errors.len() < 5 && !errors.contains(e) {
                errors.push(e.clone());
            }
        }
        let input: u64 = ok.iter().map(|r| r.prompt_tokens).sum();
        let output: u64 = ok.iter().map(|r| r.output_tokens).sum();
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let collect = |f: &dyn Fn(&RequestRecord) -> Option<f64>| -> Vec<f64> {
            ok.iter().filter_map(|r| f(r)).collect()
        };
        let itls: Vec<f64> = ok.iter().flat_map(|r| r.itl_s.iter().copied()).collect();
        Self {
            completed: ok.len(),
            failed: records.len() - ok.len(),
            errors,
            duration_s,
            total_input_tokens: input,
            total_output_tokens: output,
            request_throughput: per_s(ok.len() as f64),
            output_throughput: per_s(output as f64),
            total_token_throughput: per_s((input + output) as f64),
            goodput: (!slo.is_empty())
                .then(|| per_s(ok.iter().filter(|r| slo.met_by(r)).count() as f64)),
            ttft: Distribution::of_seconds(&collect(&|r| r.ttft_s)),
            tpot: Distribution::of_seconds(&collect(&|r| r.tpot_s())),
            itl: Distribution::of_seconds(&itls),
            e2el: Distribution::of_seconds(&collect(&|r| Some(r.e2el_s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ttft: f64, e2el: f64, tokens: u64) -> RequestRecord {
        RequestRecord {
            prompt_tokens: 10,
            output_tokens: tokens,
            ttft_s: Some(ttft),
            e2el_s: e2el,
            itl_s: vec![(e2el - ttft) / (tokens - 1) as f64; tokens as usize - 1],
            ..Default::default()
        }
    }

    #[test]
    fn summary_follows_the_vllm_definitions() {
        let mut failed = record(0.1, 0.2, 2);
        failed.error = Some("UNAVAILABLE: gone".into());
        let records = [record(0.1, 1.1, 11), record(0.3, 2.3, 5), failed];
        let slo = Slo::parse("ttft:200,tpot:150").unwrap();
        let s = ServeSummary::of(&records, 4.0, &slo);
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!(s.errors, vec!["UNAVAILABLE: gone".to_string()]);
        assert_eq!((s.total_input_tokens, s.total_output_tokens), (20, 16));
        assert_eq!(s.request_throughput, 0.5);
        assert_eq!(s.output_throughput, 4.0);
        assert_eq!(s.total_token_throughput, 9.0);
        // TPOT: (1.1 − 0.1) / 10 = 100 ms and (2.3 − 0.3) / 4 = 500 ms.
        assert!((s.tpot.mean_ms.unwrap() - 300.0).abs() < 1e-9);
        assert!((s.ttft.median_ms.unwrap() - 200.0).abs() < 1e-9);
        assert!((s.ttft.p90_ms.unwrap() - 280.0).abs() < 1e-9);
        // Only the first request meets ttft ≤ 200 ms and tpot ≤ 150 ms.
        assert_eq!(s.goodput, Some(0.25));
        // ITL: ten gaps of 100 ms and four of 500 ms.
        assert!((s.itl.mean_ms.unwrap() - 3000.0 / 14.0).abs() < 1e-9);
    }

    #[test]
    fn slo_spec_errors_are_clear() {
        assert!(Slo::parse("ttft")
            .unwrap_err()
            .contains("NAME:MILLISECONDS"));
        assert!(Slo::parse("tpot:-1").unwrap_err().contains("positive"));
        assert!(Slo::parse("foo:1").unwrap_err().contains("known are"));
        assert_eq!(Slo::parse("").unwrap(), Slo::default());
    }
}
