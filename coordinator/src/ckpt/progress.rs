//! [`Progress`]: how `ckpt compress` reports its steps — an indicatif bar when stderr is a
//! terminal ([`Progress::for_stderr`]), plain lines otherwise (logs, CI), nothing in tests.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Where progress goes.
pub enum Progress {
    /// An indicatif bar on stderr.
    Bar(ProgressBar),
    /// One line per step on stderr.
    Lines { total: u64, done: u64 },
    /// Nothing.
    Silent,
}

impl Progress {
    /// A bar on a terminal, plain lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
                )
                .expect("a valid template"),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines { total: 0, done: 0 }
        }
    }

    /// `steps` steps are coming.
    pub fn start(&mut self, steps: u64, what: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(steps);
                bar.set_message(what.to_string());
            }
            Progress::Lines { total, .. } => {
                *total = steps;
                eprintln!("compress: {what} ({steps} steps)");
            }
            Progress::Silent => {}
        }
    }

    /// One step (`label`) is done.
    pub fn step(&mut self, label: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.set_message(label.to_string());
                bar.inc(1);
            }
            Progress::Lines { total, done } => {
                *done += 1;
                eprintln!("compress: [{done}/{total}] {label}");
            }
            Progress::Silent => {}
        }
    }

    /// All steps are done (or the run stops).
    pub fn finish(&mut self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
