//! Energy per output token, only where the machine has a meter: Intel/AMD RAPL package
//! counters (`/sys/class/powercap/*-rapl:*/energy_uj`, summed over packages, wrap-around
//! handled). A measurement repeats the workload until at least [`MIN_WINDOW`] has passed, then
//! reports joules per token and average watts. Where no meter can be read (as on these VMs),
//! the report says "not measurable here" — never an estimate presented as a measurement. GPU
//! energy (NVML, summed over ranks) belongs to the CUDA build.

use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Shortest window an energy figure is measured over.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);

/// An energy figure, or why there is none. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyReport {
    pub measurable: bool,
    /// The meter ("rapl: N packages"), or why none was read.
    pub source: String,
    pub joules_per_token: Option<f64>,
    pub average_watts: Option<f64>,
    pub window_s: Option<f64>,
}

impl EnergyReport {
    fn not_measurable(reason: String) -> Self {
        Self {
            measurable: false,
            source: format!("not measurable here: {reason}"),
            joules_per_token: None,
            average_watts: None,
            window_s: None,
        }
    }
}

/// One RAPL package counter.
struct Counter {
    energy: PathBuf,
    max: u64,
}

impl Counter {
    fn read(&self) -> Option<u64> {
        std::fs::read_to_string(&self.energy)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The readable RAPL package counters of this machine.
fn rapl_counters() -> Vec<Counter> {
    let Ok(dir) = std::fs::read_dir("/sys/class/powercap") else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Top-level zones only (intel-rapl:0, not intel-rapl:0:1), to count each package once.
            name.contains("rapl:") && name.matches(':').count() == 1
        })
        .filter_map(|p| {
            let max = std::fs::read_to_string(p.join("max_energy_range_uj"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u64::MAX);
            let c = Counter {
                energy: p.join("energy_uj"),
                max,
            };
            c.read().map(|_| c)
        })
        .collect()
}

/// Runs `work` (which returns the tokens it produced) until [`MIN_WINDOW`] has passed while
/// reading the machine's energy meter; without a meter, runs nothing and says so.
pub fn measure(mut work: impl FnMut() -> Result<u64>) -> Result<EnergyReport> {
    let counters = rapl_counters();
    if counters.is_empty() {
        return Ok(EnergyReport::not_measurable(
            "no readable RAPL counter (/sys/class/powercap) and no NVML in this build".into(),
        ));
    }
    let read = |cs: &[Counter]| -> Vec<u64> { cs.iter().map(|c| c.read().unwrap_or(0)).collect() };
    let before = read(&counters);
    let start = Instant::now();
    let mut tokens = 0;
    while start.elapsed() < MIN_WINDOW {
        tokens += work()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = read(&counters);
    let micro: u64 = counters
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(c, (&b, &a))| if a >= b { a - b } else { c.max - b + a })
        .sum();
    let joules = micro as f64 / 1e6;
    Ok(EnergyReport {
        measurable: true,
        source: format!("rapl: {} package(s)", counters.len()),
        joules_per_token: (tokens > 0).then(|| joules / tokens as f64),
        average_watts: Some(joules / seconds),
        window_s: Some(seconds),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_meter_nothing_is_estimated() {
        if !super::rapl_counters().is_empty() {
            return; // this machine has a meter: the figure would be real
        }
        let mut ran = false;
        let r = super::measure(|| {
            ran = true;
            Ok(1)
        })
        .unwrap();
        assert!(!ran && !r.measurable && r.source.starts_with("not measurable here"));
        assert!(r.joules_per_token.is_none() && r.average_watts.is_none());
    }
}
