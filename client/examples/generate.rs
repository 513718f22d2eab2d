//! Example of the `bitnet-client` SDK: stream one generation from a running server and print
//! the text as it arrives, then the finish reason and token counts.
//!
//! ```text
//! bitnet-cluster up &            # or any bitnet.v1.Serving endpoint
//! cargo run -p bitnet-client --example generate -- --server 127.0.0.1:50051 --prompt "Hello"
//! ```

use anyhow::Context;
use bitnet_client::{Client, ClientOptions, GenerateEvent, GenerateParams, SamplingParams};
use clap::Parser;
use std::io::Write;
use std::time::Duration;
use tokio_stream::StreamExt;

#[derive(Parser, Debug)]
#[command(about = "Stream a generation from a bitnet-cluster server")]
struct Args {
    /// Server address: host:port or http://host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    server: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Apply the model's chat template to the prompt.
    #[arg(long)]
    chat: bool,
    /// Maximum number of generated tokens.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Temperature (0: greedy).
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Print the model info before generating.
    #[arg(long)]
    info: bool,
    /// Request deadline in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options =
        ClientOptions::default().with_request_timeout(Duration::from_secs(args.timeout_s));
    let client = Client::connect(&args.server, options)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    if args.info {
        eprintln!("{:#?}", client.model_info().await?);
    }

    let mut sampling = SamplingParams::new();
    sampling.temperature = args.temperature;
    sampling.top_p = args.top_p;
    sampling.top_k = args.top_k;
    sampling.seed = args.seed;
    sampling.max_tokens = args.max_tokens;
    sampling.stop = args.stop;
    let params = GenerateParams::text(args.prompt)
        .with_chat(args.chat)
        .with_sampling(sampling);

    let mut stream = client.generate(params);
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event? {
            GenerateEvent::Chunk { text, .. } => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            GenerateEvent::Complete {
                finish_reason,
                usage,
                matched_stop,
                ..
            } => {
                println!();
                eprintln!(
                    "[{}] finish={finish_reason} prompt_tokens={} completion_tokens={}{}",
                    stream.request_id(),
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    matched_stop
                        .map(|s| format!(" stop={s:?}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
