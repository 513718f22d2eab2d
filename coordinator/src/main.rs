//! `bitnet-cluster`: parses the command line and runs it; any error is one line on stderr and
//! exit status 1.

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = bitnet_coordinator::cli::Cli::parse();
    if let Err(e) = bitnet_coordinator::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
