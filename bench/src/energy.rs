//! Energy per output token, only where the machine has a meter: Intel/AMD RAPL package
//! counters (`/sys/class/powercap/*-rapl:*/energy_uj`, summed over packages, wrap-around
//! handled) for CPU runs, and NVML's total-energy counter of the GPU for `--device cuda` runs
//! (`crate::energy_nvml`, feature `cuda`). A measurement repeats the workload until at least
//! [`MIN_WINDOW`] has passed, reading the meter's counter before and after, then reports joules
//! per token and average watts over that window (a window that ended early — the workload
//! failed after some of it ran — is reported with a note saying so). Where no meter can be
//! read (as on these VMs), the report says "not measurable here: <why>" — never an estimate
//! presented as a measurement.

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
    /// The meter ("rapl: N packages", "nvml: …"), or why none was read.
    pub source: String,
    pub joules_per_token: Option<f64>,
    pub average_watts: Option<f64>,
    pub window_s: Option<f64>,
    /// Set when the window is shorter than [`MIN_WINDOW`] (and why).
    pub note: Option<String>,
}

impl EnergyReport {
    /// No figure: "not measurable here: `reason`".
    pub fn not_measurable(reason: impl std::fmt::Display) -> Self {
        Self {
            measurable: false,
            source: format!("not measurable here: {reason}"),
            joules_per_token: None,
            average_watts: None,
            window_s: None,
            note: None,
        }
    }

    /// The figures of one window: `joules` spent over `seconds` while `tokens` output tokens
    /// were produced (no J/token without tokens); a window under [`MIN_WINDOW`] is noted.
    pub fn from_window(source: String, joules: f64, tokens: u64, seconds: f64) -> Self {
        let short = seconds < MIN_WINDOW.as_secs_f64();
        Self {
            measurable: true,
            source,
            joules_per_token: (tokens > 0).then(|| joules / tokens as f64),
            average_watts: (seconds > 0.0).then(|| joules / seconds),
            window_s: Some(seconds),
            note: short.then(|| {
                format!(
                    "window {seconds:.1} s, shorter than the {} s asked",
                    MIN_WINDOW.as_secs()
                )
            }),
        }
    }
}

/// A cumulative energy counter.
pub trait EnergyMeter {
    /// What is read ("rapl: 2 package(s)", "nvml: GPU …").
    fn source(&self) -> String;
    /// Joules counted since an arbitrary origin (wrap-around handled by the meter).
    fn joules(&mut self) -> std::result::Result<f64, String>;
}

/// A meter, or why this machine has none.
pub type Meter = std::result::Result<Box<dyn EnergyMeter>, String>;

/// One RAPL package counter.
struct Counter {
    energy: PathBuf,
    max: u64,
    last: u64,
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

/// The RAPL package counters of this machine, summed, in microjoules.
struct Rapl {
    counters: Vec<Counter>,
    total_uj: u64,
}

impl EnergyMeter for Rapl {
    fn source(&self) -> String {
        format!("rapl: {} package(s)", self.counters.len())
    }

    fn joules(&mut self) -> std::result::Result<f64, String> {
        for c in &mut self.counters {
            let now = c
                .read()
                .ok_or_else(|| format!("{} unreadable", c.energy.display()))?;
            self.total_uj += counter_delta(c.last, now, c.max);
            c.last = now;
        }
        Ok(self.total_uj as f64 / 1e6)
    }
}

/// The increase of a counter that wraps to 0 after `max` (RAPL's `max_energy_range_uj`).
pub fn counter_delta(before: u64, after: u64, max: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        max.saturating_sub(before) + after
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
            let mut c = Counter {
                energy: p.join("energy_uj"),
                max,
                last: 0,
            };
            c.last = c.read()?;
            Some(c)
        })
        .collect()
}

/// This machine's CPU meter (RAPL), or why there is none.
pub fn rapl() -> Meter {
    let counters = rapl_counters();
    if counters.is_empty() {
        return Err(
            "no readable RAPL counter (/sys/class/powercap) and no NVML in this build".into(),
        );
    }
    Ok(Box::new(Rapl {
        counters,
        total_uj: 0,
    }))
}

/// [`measure_with`] on the CPU meter (RAPL).
pub fn measure(work: impl FnMut() -> Result<u64>) -> Result<EnergyReport> {
    measure_with(rapl(), work)
}

/// Runs `work` (which returns the output tokens it produced) until [`MIN_WINDOW`] has passed,
/// reading `meter` before and after; without a meter, runs nothing and says why. An error of
/// the first `work` call is returned; a later one ends the window early (noted in the report).
pub fn measure_with(meter: Meter, mut work: impl FnMut() -> Result<u64>) -> Result<EnergyReport> {
    let mut meter = match meter {
        Ok(m) => m,
        Err(why) => return Ok(EnergyReport::not_measurable(why)),
    };
    let before = match meter.joules() {
        Ok(j) => j,
        Err(why) => return Ok(EnergyReport::not_measurable(why)),
    };
    let start = Instant::now();
    let mut tokens = 0;
    let mut stopped = None;
    while start.elapsed() < MIN_WINDOW {
        match work() {
            Ok(t) => tokens += t,
            Err(e) if tokens > 0 => {
                stopped = Some(format!("{e:#}"));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = match meter.joules() {
        Ok(j) => j,
        Err(why) => return Ok(EnergyReport::not_measurable(why)),
    };
    let mut report = EnergyReport::from_window(meter.source(), after - before, tokens, seconds);
    if let (Some(note), Some(why)) = (&mut report.note, stopped) {
        note.push_str(&format!(": the workload failed ({why})"));
    }
    Ok(report)
}

/// Prints `energy: …` (the figures and the meter, or why there are none).
pub fn print(energy: &EnergyReport) {
    let note = energy
        .note
        .as_ref()
        .map_or(String::new(), |n| format!("; {n}"));
    match (energy.joules_per_token, energy.average_watts) {
        (Some(j), Some(w)) => println!(
            "energy: {j:.3} J/token, {w:.1} W average over {:.1} s ({}{note})",
            energy.window_s.unwrap_or(0.0),
            energy.source
        ),
        _ => println!("energy: {}{note}", energy.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter whose counter advances by `step` joules at every read.
    struct Fake {
        joules: f64,
        step: f64,
    }

    impl EnergyMeter for Fake {
        fn source(&self) -> String {
            "fake".into()
        }
        fn joules(&mut self) -> std::result::Result<f64, String> {
            self.joules += self.step;
            Ok(self.joules)
        }
    }

    #[test]
    fn without_a_meter_nothing_is_estimated() {
        if rapl().is_ok() {
            return; // this machine has a meter: the figure would be real
        }
        let mut ran = false;
        let r = measure(|| {
            ran = true;
            Ok(1)
        })
        .unwrap();
        assert!(!ran && !r.measurable && r.source.starts_with("not measurable here"));
        assert!(r.joules_per_token.is_none() && r.average_watts.is_none());
    }

    #[test]
    fn a_missing_gpu_meter_says_why() {
        let mut ran = false;
        let r = measure_with(
            Err("NVML: could not load libnvidia-ml.so.1 (not found)".into()),
            || {
                ran = true;
                Ok(1)
            },
        )
        .unwrap();
        assert!(!ran && !r.measurable);
        assert_eq!(
            r.source,
            "not measurable here: NVML: could not load libnvidia-ml.so.1 (not found)"
        );
        assert!(r.joules_per_token.is_none() && r.window_s.is_none());
    }

    #[test]
    fn joules_per_token_and_watts_of_a_window() {
        let r = EnergyReport::from_window("nvml".into(), 3000.0, 1500, 12.0);
        assert!(r.measurable && r.note.is_none());
        assert_eq!(r.joules_per_token, Some(2.0));
        assert_eq!(r.average_watts, Some(250.0));
        assert_eq!(r.window_s, Some(12.0));
        let short = EnergyReport::from_window("nvml".into(), 400.0, 0, 4.0);
        assert_eq!(short.joules_per_token, None);
        assert_eq!(short.average_watts, Some(100.0));
        assert_eq!(
            short.note.as_deref(),
            Some("window 4.0 s, shorter than the 10 s asked")
        );
        // NVML counts millijoules: 12.5 kJ over 50 s and 5000 tokens.
        let mj = (1_000_000u64, 13_500_000u64);
        let r = EnergyReport::from_window("nvml".into(), (mj.1 - mj.0) as f64 / 1e3, 5000, 50.0);
        assert_eq!(r.joules_per_token, Some(2.5));
        assert_eq!(r.average_watts, Some(250.0));
    }

    #[test]
    fn counters_wrap() {
        assert_eq!(counter_delta(10, 25, 100), 15);
        assert_eq!(counter_delta(90, 5, 100), 15);
    }

    #[test]
    fn a_later_failure_ends_the_window_early_with_a_note() {
        let mut calls = 0;
        let r = measure_with(
            Ok(Box::new(Fake {
                joules: 0.0,
                step: 50.0,
            })),
            || {
                calls += 1;
                if calls > 2 {
                    anyhow::bail!("out of memory")
                }
                Ok(10)
            },
        )
        .unwrap();
        assert_eq!(r.joules_per_token, Some(50.0 / 20.0));
        let note = r.note.unwrap();
        assert!(
            note.contains("shorter") && note.contains("out of memory"),
            "{note}"
        );
        // A first call that fails is the caller's error.
        let e = measure_with(
            Ok(Box::new(Fake {
                joules: 0.0,
                step: 1.0,
            })),
            || anyhow::bail!("no device"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no device"));
    }
}
