//! What `bitnet-cluster ckpt inspect DIR [--json]` reports about a checkpoint: family, config,
//! every stored tensor, parameter count, bytes on disk and in memory, and for every BitLinear
//! its ternary histogram and β.
//!
//! [`InspectReport`] serializes with serde (for `--json`) and displays as a readable table. Built
//! by [`crate::inspect()`] from the files ([`crate::safetensors_dir`]) and the loaded weights;
//! it names the storage format (family layout, hf-packed, native, bitblas) and, for a
//! pre-sharded checkpoint, lists every rank's tensors as `rankR/<name>`.

use crate::config::{Family, ModelConfig};
use crate::safetensors_dir::SafetensorsDir;
use crate::storage::Storage;
use crate::weights::{ModelWeights, Projection};
use safetensors::Dtype;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// One tensor as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorSummary {
    pub name: String,
    /// The safetensors dtype (`"BF16"`, `"U8"`, ...).
    pub dtype: String,
    /// The shape as stored (packed shapes are not unpacked).
    pub shape: Vec<usize>,
    /// Logical parameters: packed ternary `[out/4, in]` counts `out·in`, OneBit `[out, in/8]`
    /// counts `out·in`; 0 for buffers that are not parameters (`rotary_emb.inv_freq`, a
    /// redundant `lm_head.weight` of a tied model).
    pub parameters: u64,
}

/// The ternary weights of one BitLinear after loading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BitLinearSummary {
    /// The projection, e.g. `model.layers.0.self_attn.q_proj`.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Counts of -1, 0 and +1.
    pub minus: u64,
    pub zero: u64,
    pub plus: u64,
    /// The per-tensor scale β (output = acc · β / s).
    pub beta: f32,
}

/// Everything `ckpt inspect` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectReport {
    pub dir: PathBuf,
    pub family: Family,
    /// [`Family::name`].
    pub family_name: &'static str,
    /// How the weights are stored: `latent`, `hf-packed (...)`, `dense`, `onebit`, `native`,
    /// `native (tensor-parallel, N ranks)`, `bitblas (...)`.
    pub format: String,
    /// Ranks of a pre-sharded checkpoint (`None`: one file set for the whole model).
    pub tensor_parallel: Option<usize>,
    pub config: ModelConfig,
    /// The weight files read.
    pub files: Vec<PathBuf>,
    /// Every stored tensor, sorted by name (per rank, as `rankR/<name>`, when pre-sharded).
    pub tensors: Vec<TensorSummary>,
    /// Sum of [`TensorSummary::parameters`].
    pub parameters: u64,
    /// Sum of the sizes of the weight files.
    pub bytes_on_disk: u64,
    /// [`ModelWeights::memory_bytes`] of the loaded model.
    pub bytes_in_memory: u64,
    /// Every BitLinear (families A, B, F), in layer order.
    pub bitlinear: Vec<BitLinearSummary>,
}

impl InspectReport {
    /// Builds the report from the opened files and the weights loaded from them: one part for
    /// a whole model, one per rank for a pre-sharded checkpoint.
    pub fn new(
        dir: PathBuf,
        storage: &Storage,
        parts: &[(&SafetensorsDir, &ModelWeights)],
    ) -> Self {
        let sharded = parts.len() > 1 || storage.presharded_world().is_some();
        let prefix = |rank: usize| {
            if sharded {
                format!("rank{rank}/")
            } else {
                String::new()
            }
        };
        let config = &parts[0].1.config;
        let mut tensors = Vec::new();
        let mut bitlinear = Vec::new();
        let mut files = Vec::new();
        let (mut bytes_on_disk, mut bytes_in_memory) = (0, 0);
        for (rank, (st, weights)) in parts.iter().enumerate() {
            let p = prefix(rank);
            tensors.extend(
                st.names()
                    .filter_map(|name| st.get(name))
                    .map(|t| TensorSummary {
                        name: format!("{p}{}", t.name),
                        dtype: t.dtype.to_string(),
                        shape: t.shape.to_vec(),
                        parameters: logical_parameters(config, t.name, t.dtype, t.shape),
                    }),
            );
            bitlinear.extend(bitlinear_summaries(weights, &p));
            files.extend(st.files().iter().map(|p| p.to_path_buf()));
            bytes_on_disk += st.bytes_on_disk();
            bytes_in_memory += weights.memory_bytes() as u64;
        }
        Self {
            dir,
            family: config.family,
            family_name: config.family.name(),
            format: format_name(config, storage),
            tensor_parallel: storage.presharded_world(),
            config: config.clone(),
            files,
            parameters: tensors.iter().map(|t| t.parameters).sum(),
            tensors,
            bytes_on_disk,
            bytes_in_memory,
            bitlinear,
        }
    }
}

/// Every BitLinear of `weights`, named `{prefix}model.layers.{i}.{projection}`.
fn bitlinear_summaries(weights: &ModelWeights, prefix: &str) -> Vec<BitLinearSummary> {
    weights
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| {
            layer
                .projections()
                .into_iter()
                .filter_map(move |(name, p)| match p {
                    Projection::Ternary { weight, .. } => {
                        let h = weight.histogram();
                        Some(BitLinearSummary {
                            name: format!("{prefix}model.layers.{i}.{name}"),
                            rows: weight.rows(),
                            cols: weight.cols(),
                            minus: h.minus,
                            zero: h.zero,
                            plus: h.plus,
                            beta: weight.beta(),
                        })
                    }
                    _ => None,
                })
        })
        .collect()
}

/// The storage format as `ckpt inspect` names it.
fn format_name(config: &ModelConfig, storage: &Storage) -> String {
    match storage {
        Storage::Native(f) => match &f.tensor_parallel {
            None => format!("native v{}", f.version),
            Some(tp) => format!(
                "native v{} (tensor-parallel, {} ranks)",
                f.version, tp.world
            ),
        },
        Storage::BitBlas => "bitblas (fused qkv / gate_up, unpermuted)".into(),
        Storage::Family => match (config.family, &config.quantization) {
            (Family::BitNet | Family::LlamaBitNet, Some(q)) if q.mode == "offline" => {
                format!("hf-packed (uint8 [out/4, in], {})", q.linear_class)
            }
            (Family::BitNet, None) => "hf-packed (uint8 [out/4, in], bitlinear)".into(),
            (Family::Llama, _) => "dense".into(),
            (Family::OneBit, _) => "onebit (sign bits)".into(),
            _ => "latent (ternarized at load)".into(),
        },
    }
}

/// Logical parameters of a stored tensor (see [`TensorSummary::parameters`]).
fn logical_parameters(config: &ModelConfig, name: &str, dtype: Dtype, shape: &[usize]) -> u64 {
    if name.ends_with(".rotary_emb.inv_freq")
        || (config.tie_word_embeddings && name == "lm_head.weight")
    {
        return 0;
    }
    let numel: u64 = shape.iter().map(|&d| d as u64).product();
    let projection_weight = name.starts_with("model.layers.")
        && (name.ends_with("_proj.weight") || name.ends_with("_proj.qweight"));
    match (config.family, dtype) {
        _ if !projection_weight => numel,
        (Family::OneBit, Dtype::I8 | Dtype::U8) => numel * 8,
        // Packed ternary (hf-packed, native with its padding, BitBLAS): four per byte.
        (_, Dtype::U8 | Dtype::I8) => numel * 4,
        _ => numel,
    }
}

/// `1234567` → `"1.23 M"` (decimal units).
fn human_count(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.2} K", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", x / 1e6),
        _ => format!("{:.2} B", x / 1e9),
    }
}

/// `1536` → `"1.50 KiB"`.
fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", units[u])
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "model         {}", self.dir.display())?;
        writeln!(f, "family        {}", self.family_name)?;
        writeln!(f, "format        {}", self.format)?;
        writeln!(
            f,
            "architecture  {} (model_type {:?})",
            c.architecture, c.model_type
        )?;
        writeln!(
            f,
            "shape         hidden {}, intermediate {}, layers {}, heads {} (kv {}, head_dim {}), vocab {}",
            c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size
        )?;
        writeln!(
            f,
            "positions     {} (rope θ {}), rms_norm_eps {}, activation {:?}, tied embeddings {}",
            c.max_position_embeddings,
            c.rope_theta,
            c.rms_norm_eps,
            c.activation,
            c.tie_word_embeddings
        )?;
        writeln!(
            f,
            "tokens        bos {}, eos {:?}, pad {}; dtype {}",
            opt(&c.bos_token_id),
            c.eos_token_ids,
            opt(&c.pad_token_id),
            c.dtype.as_deref().unwrap_or("-")
        )?;
        if let Some(q) = &c.quantization {
            writeln!(
                f,
                "quantization  {} / {}, use_rms_norm {} (eps {})",
                q.linear_class, q.mode, q.use_rms_norm, q.rms_norm_eps
            )?;
        }
        writeln!(f, "files         {}", self.files.len())?;
        writeln!(
            f,
            "parameters    {} ({})",
            human_count(self.parameters),
            self.parameters
        )?;
        writeln!(
            f,
            "on disk       {} ({} bytes)",
            human_bytes(self.bytes_on_disk),
            self.bytes_on_disk
        )?;
        writeln!(
            f,
            "in memory     {} ({} bytes)",
            human_bytes(self.bytes_in_memory),
            self.bytes_in_memory
        )?;

        writeln!(f, "\ntensors ({})", self.tensors.len())?;
        let shapes: Vec<String> = self
            .tensors
            .iter()
            .map(|t| format!("{:?}", t.shape))
            .collect();
        let wn = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let ws = shapes.iter().map(String::len).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "  {:<wn$}  {:<5}  {:<ws$}  {:>12}",
            "name", "dtype", "shape", "parameters"
        )?;
        for (t, s) in self.tensors.iter().zip(&shapes) {
            writeln!(
                f,
                "  {:<wn$}  {:<5}  {:<ws$}  {:>12}",
                t.name, t.dtype, s, t.parameters
            )?;
        }

        if !self.bitlinear.is_empty() {
            writeln!(f, "\nbitlinear ({})", self.bitlinear.len())?;
            let wn = self
                .bitlinear
                .iter()
                .map(|b| b.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(
                f,
                "  {:<wn$}  {:>11}  {:>10} {:>10} {:>10}  {:>6}  {:>12}",
                "name", "rows×cols", "-1", "0", "+1", "zero%", "beta"
            )?;
            for b in &self.bitlinear {
                let total = (b.minus + b.zero + b.plus).max(1) as f64;
                writeln!(
                    f,
                    "  {:<wn$}  {:>11}  {:>10} {:>10} {:>10}  {:>6.1}  {:>12.6e}",
                    b.name,
                    format!("{}×{}", b.rows, b.cols),
                    b.minus,
                    b.zero,
                    b.plus,
                    100.0 * b.zero as f64 / total,
                    b.beta
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_count(512), "512");
        assert_eq!(human_count(2_410_000_000), "2.41 B");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
