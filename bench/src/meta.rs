//! What every JSON result records about its run, so a report can say which machine, date,
//! commit and exact command produced each figure.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The provenance of one benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Processor model, logical CPUs and memory (and the GPU when `nvidia-smi` names one).
    pub machine: String,
    /// UTC date and time, ISO 8601.
    pub date: String,
    /// `git rev-parse --short HEAD` of the working directory (or `BITNET_COMMIT`), else "unknown".
    pub commit: String,
    /// The command line, as typed.
    pub command: String,
}

impl RunMeta {
    /// The provenance of this process's run.
    pub fn now() -> Self {
        Self {
            machine: machine(),
            date: utc_now(),
            commit: commit(),
            command: std::env::args()
                .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    let mut s = format!("{model}, {cpus} CPUs, {mem_gib:.0} GiB");
    if let Some(gpu) = command_line("nvidia-smi", &["--query-gpu=name", "--format=csv,noheader"]) {
        if !gpu.is_empty() {
            s.push_str(&format!(", GPU {}", gpu.replace('\n', " + ")));
        }
    }
    s
}

fn commit() -> String {
    std::env::var("BITNET_COMMIT")
        .ok()
        .or_else(|| command_line("git", &["rev-parse", "--short", "HEAD"]))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The trimmed stdout of a command that succeeded.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch as an ISO 8601 UTC time (proleptic Gregorian calendar).
fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::format_utc(1_795_618_245), "2026-11-25T14:50:45Z");
    }

    #[test]
    fn meta_names_the_machine_and_command() {
        let m = super::RunMeta::now();
        assert!(m.machine.contains("CPUs"), "{}", m.machine);
        assert!(!m.command.is_empty() && !m.commit.is_empty());
        assert!(m.date.ends_with('Z') && m.date.len() == 20, "{}", m.date);
    }
}
