//! `bitnet-bench`: parses the command line and runs it; errors are one line and exit status 1.

use clap::Parser;

fn main() {
    if let Err(e) = bitnet_bench::cli::run(bitnet_bench::cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
