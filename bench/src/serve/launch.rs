//! Servers for `bitnet-bench serve` to load: `--launch` starts a real `bitnet-cluster up`
//! process (its flags passed through) and stops it with SIGTERM afterwards; `--preset NAME`
//! serves a preset model of random weights inside this process (no checkpoint on disk needed;
//! token-id prompts only, since such a model has no tokenizer).

use crate::presets;
use anyhow::{bail, Context, Result};
use bitnet_client::{Client, ClientOptions};
use bitnet_coordinator::serve::{build_from_weights, serve_on, ServeOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a launched cluster may take to answer (loading a large model included).
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// A `bitnet-cluster up` child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LaunchedCluster {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl LaunchedCluster {
    /// Starts `bin up --host 127.0.0.1 --port P <up_args>` on a free port, logging to a file.
    pub fn start(bin: &Path, up_args: &[String]) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::env::temp_dir().join(format!("bitnet-bench-cluster-{port}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["up", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(up_args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (set --cluster-bin or BITNET_CLUSTER_BIN)",
                    bin.display()
                )
            })?;
        eprintln!(
            "launched {} up {} (log: {})",
            bin.display(),
            up_args.join(" "),
            log.display()
        );
        Ok(Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        })
    }

    /// The process id of the coordinator (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server answers `GetServerInfo`; fails if the process exits first.
    pub async fn wait_ready(&mut self) -> Result<Client> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "bitnet-cluster up exited with {status} before serving; log:\n{}",
                    log_tail(&self.log)
                );
            }
            let options = ClientOptions::default().with_connect_timeout(Duration::from_secs(2));
            if let Ok(client) = Client::connect(&self.addr, options).await {
                if client.server_info().await.is_ok() {
                    return Ok(client);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "bitnet-cluster up did not serve within {READY_TIMEOUT:?}; log:\n{}",
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LaunchedCluster {
    fn drop(&mut self) {
        // SIGTERM drains the cluster (and stops its workers); SIGKILL only if it hangs.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The `bitnet-cluster` binary: `--cluster-bin`, else `BITNET_CLUSTER_BIN`, else beside this
/// executable, else from `PATH`.
pub fn cluster_bin(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("BITNET_CLUSTER_BIN") {
        return PathBuf::from(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("bitnet-cluster")));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("bitnet-cluster"),
    }
}

/// What an in-process preset server is given.
#[derive(Clone, Debug)]
pub struct PresetServer {
    pub preset: String,
    pub threads: usize,
    pub max_num_seqs: usize,
    pub max_batched_tokens: usize,
    pub max_model_len: usize,
}

/// Builds the preset model and serves it on an ephemeral port of this process until `stop`
/// fires; returns the address.
pub async fn serve_preset(
    opts: &PresetServer,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<String> {
    let spec = presets::spec_or_err(&opts.preset)?;
    eprintln!(
        "building {} with RANDOM weights (in this process) ...",
        opts.preset
    );
    let weights = spec.build();
    let serve_opts = ServeOptions {
        model_dir: None,
        max_num_seqs: opts.max_num_seqs,
        max_batched_tokens: opts.max_batched_tokens,
        max_model_len: opts.max_model_len,
        num_kv_blocks: None,
        max_admitted: 4096,
        device: Default::default(),
        threads: opts.threads,
        lm_head_int8: false,
    };
    let name = format!("{} (RANDOM weights)", opts.preset);
    let served = build_from_weights(&serve_opts, weights, None, name)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(serve_on(listener, served, async {
        let _ = stop.await;
    }));
    Ok(addr)
}
