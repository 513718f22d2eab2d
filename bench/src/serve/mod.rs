//! `bitnet-bench serve`: a load generator over the client SDK, shaped like `vllm bench serve`.
//! For every point of `--concurrency × --request-rate` it sends `--num-prompts` requests
//! (Poisson arrivals, or all at once for `inf`, with at most `concurrency` in flight), or — with
//! `--duration` — keeps `concurrency` requests in flight for that long (a soak run that also
//! samples the servers' resident memory and reports its slope). Output: a table and, with
//! `--json`, every figure with the run's provenance ([`crate::meta::RunMeta`]).

pub mod launch;
pub mod load;
pub mod metrics;
pub mod soak;
pub mod workload;

use crate::meta::RunMeta;
use anyhow::{bail, Context, Result};
use bitnet_client::{Client, ClientOptions};
use clap::Args;
use launch::{cluster_bin, LaunchedCluster, PresetServer};
use metrics::{ServeSummary, Slo};
use serde::Serialize;
use soak::RssSeries;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of a running server (host:port).
    #[arg(long, required_unless_present_any = ["launch", "preset"])]
    pub server: Option<String>,
    /// Start a local `bitnet-cluster up` first (with the flags below) and stop it after.
    #[arg(long, conflicts_with_all = ["server", "preset"])]
    pub launch: bool,
    /// Serve a preset model of random weights in this process instead (e.g. bitnet-2b4t).
    #[arg(long, conflicts_with = "server")]
    pub preset: Option<String>,
    /// Concurrency limits (requests in flight), one load point each.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub concurrency: Vec<usize>,
    /// Request rates in requests/s (Poisson arrivals) or inf, one load point each.
    #[arg(long, value_delimiter = ',', default_value = "inf", value_parser = workload::parse_rate)]
    pub request_rate: Vec<f64>,
    /// Requests per load point.
    #[arg(long, default_value_t = 64)]
    pub num_prompts: usize,
    /// Requests per load point as a multiple of its concurrency instead (a curve whose low
    /// points stay short).
    #[arg(long)]
    pub prompts_per_concurrency: Option<usize>,
    /// Prompt length in tokens (random token ids).
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    /// Tokens generated per request (EOS ignored).
    #[arg(long, default_value_t = 128)]
    pub output_len: u32,
    /// JSONL prompts instead: {"prompt": "..."} or {"prompt_token_ids": [...]}, optional "output_len".
    #[arg(long, conflicts_with = "input_len")]
    pub dataset: Option<PathBuf>,
    /// Seed of the random prompts and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SLOs for goodput, e.g. ttft:500,tpot:50,e2el:5000 (milliseconds).
    #[arg(long, value_parser = Slo::parse)]
    pub goodput: Option<Slo>,
    /// Soak: keep each point's concurrency busy for this many seconds instead of --num-prompts,
    /// sampling the servers' resident memory.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds between resident-memory samples of a soak run.
    #[arg(long, default_value_t = 5.0)]
    pub rss_interval: f64,
    /// Process id of an external server whose memory a soak run should sample (with --server).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Model directory for --launch (default: the built-in demo model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tensor-parallel workers for --launch.
    #[arg(long)]
    pub tp: Option<usize>,
    /// --max-num-seqs of the launched or preset server.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// --max-batched-tokens of the launched or preset server.
    #[arg(long, default_value_t = 2048)]
    pub max_batched_tokens: usize,
    /// --max-model-len of the launched or preset server.
    #[arg(long, default_value_t = 4096)]
    pub max_model_len: usize,
    /// Threads per worker of the launched server, or of the preset server.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The bitnet-cluster binary for --launch (default: BITNET_CLUSTER_BIN, beside this one, PATH).
    #[arg(long)]
    pub cluster_bin: Option<PathBuf>,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One load point. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Serialize)]
pub struct ServePoint {
    pub concurrency: usize,
    /// Requests/s, or `null` for inf.
    pub request_rate: Option<f64>,
    pub num_prompts: usize,
    #[serde(flatten)]
    pub summary: ServeSummary,
    /// Resident memory of the servers during a soak run.
    pub rss: Option<RssSeries>,
    /// Engine steps during the point and their mean wall time and worker compute (from the
    /// server's per-step timings; `null` when the server does not report them).
    pub steps: Option<u64>,
    pub step_wall_ms: Option<f64>,
    pub step_worker_ms: Option<f64>,
    /// `step_wall_ms − step_worker_ms`: scheduling, the round trip, output processing.
    pub coordinator_overhead_ms_per_step: Option<f64>,
}

/// A whole `serve` run. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Serialize)]
pub struct ServeReport {
    pub kind: &'static str,
    pub meta: RunMeta,
    /// What was loaded: an address, a launched cluster or an in-process preset.
    pub server: String,
    pub model: serde_json::Value,
    pub input_len: Option<usize>,
    pub output_len: u32,
    pub dataset: Option<String>,
    pub slo: Option<Slo>,
    pub points: Vec<ServePoint>,
}

/// Runs the load points and prints a table (and writes JSON when asked).
pub fn run(args: &ServeArgs) -> Result<ServeReport> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency values must be positive");
    }
    if args.num_prompts == 0 || args.output_len == 0 {
        bail!("--num-prompts and --output-len must be positive");
    }
    if matches!(args.duration, Some(d) if !(d > 0.0 && d.is_finite())) {
        bail!("--duration must be a positive number of seconds");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(run_async(args))?;
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(report)
}

async fn run_async(args: &ServeArgs) -> Result<ServeReport> {
    let mut launched = None;
    let mut _stop_preset = None;
    let (client, server, rss_pid) = if args.launch {
        let mut up_args = vec![
            "--max-num-seqs".to_string(),
            args.max_num_seqs.to_string(),
            "--max-batched-tokens".into(),
            args.max_batched_tokens.to_string(),
            "--max-model-len".into(),
            args.max_model_len.to_string(),
        ];
        if let Some(m) = &args.model {
            up_args.extend(["--model".into(), m.display().to_string()]);
        }
        if let Some(tp) = args.tp {
            up_args.extend(["--tp".into(), tp.to_string()]);
        }
        if let Some(t) = args.threads {
            up_args.extend(["--threads-per-worker".into(), t.to_string()]);
        }
        let cluster = launched.insert(LaunchedCluster::start(
            &cluster_bin(args.cluster_bin.as_deref()),
            &up_args,
        )?);
        let client = cluster.wait_ready().await?;
        let pid = cluster.pid();
        (
            client,
            format!("launched: bitnet-cluster up {}", up_args.join(" ")),
            Some(pid),
        )
    } else if let Some(preset) = &args.preset {
        let (tx, rx) = tokio::sync::oneshot::channel();
        _stop_preset = Some(tx);
        let opts = PresetServer {
            preset: preset.clone(),
            threads: args
                .threads
                .unwrap_or_else(bitnet_kernels::cpu::physical_cores),
            max_num_seqs: args.max_num_seqs,
            max_batched_tokens: args.max_batched_tokens,
            max_model_len: args.max_model_len,
        };
        let addr = launch::serve_preset(&opts, rx).await?;
        let client = Client::connect(&addr, ClientOptions::default()).await?;
        (
            client,
            format!("in-process preset {preset}"),
            Some(std::process::id()),
        )
    } else {
        let addr = args
            .server
            .clone()
            .context("--server, --launch or --preset is required")?;
        let client = Client::connect(&addr, ClientOptions::default())
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        (client, addr, args.server_pid)
    };
    let info = client.model_info().await.context("GetModelInfo")?;
    let model = serde_json::to_value(&info)?;
    let count = |concurrency: usize| match args.prompts_per_concurrency {
        Some(k) => k.max(1) * concurrency,
        None => args.num_prompts,
    };
    let most = args
        .concurrency
        .iter()
        .map(|&c| count(c))
        .max()
        .unwrap_or(1);
    let all_items = match &args.dataset {
        Some(path) => workload::dataset_prompts(path, most, args.output_len)?,
        None => workload::random_prompts(
            most,
            args.input_len,
            args.output_len,
            info.vocab_size,
            args.seed,
        ),
    };
    let slo = args.goodput.clone().unwrap_or_default();
    let mut points = Vec::new();
    for &concurrency in &args.concurrency {
        let items = &all_items[..count(concurrency)];
        for &rate in &args.request_rate {
            eprintln!(
                "load point: concurrency {concurrency}, rate {}",
                rate_name(rate)
            );
            let before = client.server_info().await.ok();
            let (records, duration_s, rss) = match args.duration {
                Some(secs) => {
                    let interval = Duration::from_secs_f64(args.rss_interval.max(0.1));
                    let (records, d, rss) = soak::run_soak(
                        &client,
                        items,
                        concurrency,
                        Duration::from_secs_f64(secs),
                        rss_pid,
                        interval,
                    )
                    .await;
                    (records, d, Some(rss))
                }
                None => {
                    let arrivals = workload::arrival_times(items.len(), rate, args.seed);
                    let (records, d) =
                        load::run_point(&client, items, &arrivals, concurrency).await;
                    (records, d, None)
                }
            };
            let after = client.server_info().await.ok();
            let timing = before.zip(after).and_then(|(b, a)| {
                let steps = a
                    .steps_timed
                    .checked_sub(b.steps_timed)
                    .filter(|&s| s > 0)?;
                let wall = (a.step_wall_ms_total - b.step_wall_ms_total) / steps as f64;
                let worker = (a.step_worker_ms_total - b.step_worker_ms_total) / steps as f64;
                Some((steps, wall, worker))
            });
            points.push(ServePoint {
                steps: timing.map(|t| t.0),
                step_wall_ms: timing.map(|t| t.1),
                step_worker_ms: timing.map(|t| t.2),
                coordinator_overhead_ms_per_step: timing.map(|t| t.1 - t.2),
                concurrency,
                request_rate: rate.is_finite().then_some(rate),
                num_prompts: records.len(),
                summary: ServeSummary::of(&records, duration_s, &slo),
                rss,
            });
        }
    }
    drop(launched);
    Ok(ServeReport {
        kind: "serve",
        meta: RunMeta::now(),
        server,
        model,
        input_len: args.dataset.is_none().then_some(args.input_len),
        output_len: args.output_len,
        dataset: args.dataset.as_ref().map(|p| p.display().to_string()),
        slo: args.goodput.clone(),
        points,
    })
}

fn rate_name(rate: f64) -> String {
    if rate.is_finite() {
        format!("{rate}")
    } else {
        "inf".into()
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn print_table(report: &ServeReport) {
    println!("server: {}", report.server);
    println!(
        "{:>5} {:>6} {:>6} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "conc",
        "rate",
        "done",
        "fail",
        "req/s",
        "out tok/s",
        "tot tok/s",
        "TTFT ms",
        "p99 TTFT",
        "TPOT ms",
        "ITL ms",
        "p99 ITL",
        "E2E ms"
    );
    for p in &report.points {
        let s = &p.summary;
        println!(
            "{:>5} {:>6} {:>6} {:>5} {:>8.2} {:>9.1} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.concurrency,
            rate_name(p.request_rate.unwrap_or(f64::INFINITY)),
            s.completed,
            s.failed,
            s.request_throughput,
            s.output_throughput,
            s.total_token_throughput,
            ms(s.ttft.median_ms),
            ms(s.ttft.p99_ms),
            ms(s.tpot.median_ms),
            ms(s.itl.median_ms),
            ms(s.itl.p99_ms),
            ms(s.e2el.median_ms),
        );
        if let Some(g) = s.goodput {
            println!("      goodput {g:.2} req/s");
        }
        if let (Some(steps), Some(wall), Some(over)) =
            (p.steps, p.step_wall_ms, p.coordinator_overhead_ms_per_step)
        {
            println!(
                "      {steps} engine steps: {wall:.2} ms each, coordinator overhead {over:.3} ms/step"
            );
        }
        for e in &s.errors {
            println!("      error: {e}");
        }
        if let Some(rss) = &p.rss {
            println!(
                "      resident memory {:.1} → {:.1} MiB over {:.0} s, slope {:+.3} MiB/min ({:+.3} after a {:.0} s warm-up)",
                rss.first_mib(),
                rss.last_mib(),
                rss.span_s(),
                rss.slope_mib_per_min,
                rss.steady_slope_mib_per_min,
                rss.warmup_s
            );
        }
    }
}
