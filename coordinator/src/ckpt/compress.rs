//! `bitnet-cluster ckpt compress`: a checkpoint of any family → one small file set, streamed
//! layer by layer (peak memory about one layer plus the embedding, not the model).
//!
//! Data flow: [`bitnet_checkpoints::ModelReader`] reads the source one part at a time
//! (ternarizing latent weights, β over the whole tensor) → with `--tp N`,
//! [`bitnet_worker::shard::shard_layer`] cuts each layer for every rank (β stays the whole
//! tensor's) → [`bitnet_checkpoints::export`] turns the part into the format's tensors →
//! [`TensorFileWriter`]s append them → side files, `bitnet_format.json` /
//! `quantize_config.json`, `manifest.json` → [`OutputDir::commit`] (fsync, atomic rename).
//! Any error drops the [`OutputDir`], which removes the temporary directory; the input is
//! only read.

use super::args::LmHeadArg;
use super::error::CkptError;
use super::out_config;
use super::progress::Progress;
use bitnet_checkpoints::export::{
    dense_tensors, layer_tensors, norm_tensor, OutTensor, OutputFormat,
};
use bitnet_checkpoints::manifest::{Manifest, MANIFEST_FILE};
use bitnet_checkpoints::native_format::{rank_file_name, FORMAT_FILE};
use bitnet_checkpoints::output_dir::OutputDir;
use bitnet_checkpoints::storage::QUANTIZE_CONFIG;
use bitnet_checkpoints::tensor_writer::TensorFileWriter;
use bitnet_checkpoints::{
    CheckpointError, Family, LayerWeights, ModelConfig, ModelReader, RankShapes, RawConfig,
    SafetensorsDir, Storage,
};
use bitnet_kernels::{DenseData, DenseMatrix};
use bitnet_worker::shard::{shard_layer, ShardLayout, ShardPlan};
use half::{bf16, f16};
use safetensors::Dtype;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to compress, and how.
#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub format: OutputFormat,
    /// One weight file per rank (native only).
    pub tp: Option<usize>,
    pub lm_head: LmHeadArg,
}

/// What a compression wrote (printed at the end; `--json` prints it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct CompressSummary {
    pub output: PathBuf,
    pub format: &'static str,
    pub tp: Option<usize>,
    /// File name → bytes.
    pub files: BTreeMap<String, u64>,
    /// Logical parameters (embedding, LM head when untied, projections, norms).
    pub parameters: u64,
    /// Bytes of the source's weight files.
    pub source_bytes: u64,
    /// Bytes of every output file.
    pub output_bytes: u64,
    /// Bytes of the same parameters in f16.
    pub f16_bytes: u64,
    pub ratio_vs_source: f64,
    pub ratio_vs_f16: f64,
    pub seconds: f64,
}

impl std::fmt::Display for CompressSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        writeln!(
            f,
            "wrote {} ({}{}, {} files) in {:.1} s",
            self.output.display(),
            self.format,
            self.tp.map_or(String::new(), |n| format!(", --tp {n}")),
            self.files.len() + 1,
            self.seconds
        )?;
        writeln!(
            f,
            "  output {:.3} GiB ({} bytes), {} parameters",
            gib(self.output_bytes),
            self.output_bytes,
            self.parameters
        )?;
        writeln!(
            f,
            "  source {:.3} GiB: ratio {:.2}x",
            gib(self.source_bytes),
            self.ratio_vs_source
        )?;
        write!(
            f,
            "  as f16 {:.3} GiB: ratio {:.2}x",
            gib(self.f16_bytes),
            self.ratio_vs_f16
        )
    }
}

/// Compresses `opts.input` into `opts.output` (see the module doc).
pub fn compress(
    opts: &CompressOptions,
    progress: &mut Progress,
) -> Result<CompressSummary, CkptError> {
    let started = Instant::now();
    check_paths(&opts.input, &opts.output)?;
    let raw = RawConfig::read(&opts.input)?;
    let storage = Storage::detect(&opts.input)?;
    if let Some(world) = storage.presharded_world() {
        return Err(CkptError::Options(format!(
            "{} is pre-sharded for --tp {world}; compress from the unsharded source",
            opts.input.display()
        )));
    }
    let st = SafetensorsDir::open(&opts.input)?;
    let names: Vec<&str> = st.names().collect();
    let config = raw.to_model_config(Some(&names))?;
    check_format(opts, &config)?;
    let layouts = shard_layouts(opts.tp, &config)?;
    let reader = ModelReader::new(&st, config.clone(), &storage, None);
    let out = OutputDir::create(&opts.output)?;
    let file_names: Vec<String> = match &layouts {
        Some(l) => (0..l.len()).map(|r| rank_file_name(r, l.len())).collect(),
        None => vec!["model.safetensors".into()],
    };
    let max_tensors = 8 + config.num_layers * OutputFormat::MAX_TENSORS_PER_LAYER;
    let mut writers = file_names
        .iter()
        .map(|n| TensorFileWriter::create(&out.path().join(n), max_tensors))
        .collect::<Result<Vec<_>, _>>()?;
    progress.start(
        config.num_layers as u64 + 2,
        &format!("{} → {}", opts.input.display(), opts.output.display()),
    );

    // Embedding and LM head first (the order of tensors in a file does not matter).
    let source_embedding = reader.embedding()?;
    let source_head = reader.lm_head()?;
    let mut parameters = numel(&source_embedding) + source_head.as_ref().map_or(0, numel);
    let head = match opts.lm_head {
        LmHeadArg::Int8 => Some(source_head.as_ref().unwrap_or(&source_embedding).to_int8()),
        choice => source_head.map(|h| convert(h, choice, &config)),
    };
    let embedding = convert(source_embedding, opts.lm_head, &config);
    let embedding_dtype = dtype_of(&embedding);
    write_all(
        &mut writers,
        &dense_tensors("model.embed_tokens.weight", &embedding),
    )?;
    drop(embedding);
    let head_desc = match &head {
        None => "tied".to_string(),
        Some(h) => {
            write_all(&mut writers, &dense_tensors("lm_head.weight", h))?;
            dtype_of(h).to_string()
        }
    };
    drop(head);
    st.release_pages();
    progress.step("embedding and LM head");

    let sub_norms = match (opts.format, reader.sub_norm_names()) {
        (OutputFormat::HfPacked, Some(_)) => Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
        (_, names) => names,
    };
    for i in 0..config.num_layers {
        let layer = reader.layer(i)?;
        parameters += layer_parameters(&layer);
        match &layouts {
            None => write_all(
                &mut writers,
                &layer_tensors(opts.format, i, &layer, sub_norms)?,
            )?,
            Some(layouts) => {
                for (w, layout) in writers.iter_mut().zip(layouts) {
                    let local = shard_layer(layout, i, &layer)?.to_local_layer();
                    write(
                        w,
                        &layer_tensors(OutputFormat::Native, i, &local, sub_norms)?,
                    )?;
                }
            }
        }
        drop(layer);
        st.release_pages();
        progress.step(&format!("layer {}/{}", i + 1, config.num_layers));
    }
    let final_norm = reader.final_norm()?;
    parameters += final_norm.weight.as_ref().map_or(0, |w| w.len() as u64);
    write_all(
        &mut writers,
        &norm_tensor("model.norm.weight", &final_norm)
            .into_iter()
            .collect::<Vec<_>>(),
    )?;
    reader.finish()?;

    let mut files = BTreeMap::new();
    for (name, w) in file_names.iter().zip(writers) {
        files.insert(name.clone(), w.finish()?);
    }
    let dir = out.path();
    match opts.format {
        OutputFormat::HfPacked => out_config::write_json(
            &dir.join("config.json"),
            &out_config::hf_packed_config(&raw.json, &config, embedding_dtype),
        )?,
        _ => copy(&opts.input.join("config.json"), &dir.join("config.json"))?,
    }
    match opts.format {
        OutputFormat::Native => {
            let ranks = layouts
                .as_ref()
                .map(|l| l.iter().map(rank_shapes).collect());
            let format = out_config::native_format(&config, embedding_dtype, head_desc, ranks);
            let value = serde_json::to_value(&format).expect("the format serializes");
            out_config::write_json(&dir.join(FORMAT_FILE), &value)?;
        }
        OutputFormat::BitBlas => out_config::write_json(
            &dir.join(QUANTIZE_CONFIG),
            &out_config::bitblas_quantize_config(),
        )?,
        OutputFormat::HfPacked => {}
    }
    out_config::copy_side_files(&opts.input, dir)?;
    let manifest = Manifest::build(dir)?;
    manifest.write(dir)?;
    let manifest_bytes = std::fs::metadata(dir.join(MANIFEST_FILE)).map_or(0, |m| m.len());
    let output_bytes = manifest.files.values().map(|f| f.bytes).sum::<u64>() + manifest_bytes;
    out.commit()?;
    progress.step("final norm, side files, manifest.json, committed");
    progress.finish();

    let source_bytes = st.bytes_on_disk();
    let f16_bytes = parameters * 2;
    Ok(CompressSummary {
        output: opts.output.clone(),
        format: opts.format.name(),
        tp: opts.tp,
        files: manifest
            .files
            .iter()
            .map(|(n, f)| (n.clone(), f.bytes))
            .collect(),
        parameters,
        source_bytes,
        output_bytes,
        f16_bytes,
        ratio_vs_source: source_bytes as f64 / output_bytes.max(1) as f64,
        ratio_vs_f16: f16_bytes as f64 / output_bytes.max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The input must be a directory; the output must not be it, inside it, or contain it.
fn check_paths(input: &Path, output: &Path) -> Result<(), CkptError> {
    let input = input
        .canonicalize()
        .map_err(|e| CheckpointError::io(input, e))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| CheckpointError::io(&parent, e))?;
    let output = match output.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    };
    if output.starts_with(&input) || input.starts_with(&output) {
        return Err(CkptError::Options(format!(
            "--output {} must not be --input {}, inside it or around it (the input is only read)",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

/// Refuses what the chosen format cannot hold, before anything is written.
fn check_format(opts: &CompressOptions, config: &ModelConfig) -> Result<(), CkptError> {
    let format = opts.format.name();
    if opts.tp.is_some() && opts.format != OutputFormat::Native {
        return Err(CkptError::Options(format!(
            "--tp writes the native format only (asked for --format {format})"
        )));
    }
    if opts.format == OutputFormat::Native {
        return Ok(());
    }
    if !matches!(config.family, Family::OneBitLlm | Family::BitNet) {
        return Err(CkptError::Options(format!(
            "--format {format} holds the 1bitllm and bitnet families only; this checkpoint is \
             {}: use --format native",
            config.family.name()
        )));
    }
    let projection_norms = config.quantization.as_ref().is_some_and(|q| q.use_rms_norm);
    if opts.format == OutputFormat::BitBlas && projection_norms {
        return Err(CkptError::Options(
            "--format bitblas has no per-projection RMSNorm (use_rms_norm): use --format native"
                .into(),
        ));
    }
    if opts.lm_head == LmHeadArg::Int8 {
        return Err(CkptError::Options(format!(
            "--lm-head int8 is written by the native format only (asked for --format {format})"
        )));
    }
    Ok(())
}

/// Every rank's layout for `--tp N` (an error when the model cannot be split so).
fn shard_layouts(
    tp: Option<usize>,
    config: &ModelConfig,
) -> Result<Option<Vec<ShardLayout>>, CkptError> {
    match tp {
        None => Ok(None),
        Some(0) => Err(CkptError::Options("--tp must be at least 1".into())),
        Some(n) => (0..n)
            .map(|r| ShardPlan::new(r, n).and_then(|p| p.layout(config)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(CkptError::from),
    }
}

fn rank_shapes(l: &ShardLayout) -> RankShapes {
    RankShapes {
        q_features: l.q_features().len(),
        kv_features: l.kv_features().len(),
        ffn_features: l.ffn.len(),
    }
}

fn write(w: &mut TensorFileWriter, tensors: &[OutTensor]) -> Result<(), CkptError> {
    for t in tensors {
        w.add(&t.name, t.dtype, &t.shape, &t.data)?;
    }
    Ok(())
}

fn write_all(writers: &mut [TensorFileWriter], tensors: &[OutTensor]) -> Result<(), CkptError> {
    writers.iter_mut().try_for_each(|w| write(w, tensors))
}

fn copy(from: &Path, to: &Path) -> Result<(), CkptError> {
    let len = std::fs::metadata(from).map_or(0, |m| m.len() as usize);
    bitnet_checkpoints::test_hook::charge(len)
        .and_then(|_| std::fs::copy(from, to))
        .map(|_| ())
        .map_err(|e| CheckpointError::io(to, e).into())
}

fn numel(m: &DenseMatrix) -> u64 {
    (m.rows() * m.cols()) as u64
}

fn layer_parameters(l: &LayerWeights) -> u64 {
    let norm = |n: Option<&bitnet_checkpoints::Norm>| {
        n.and_then(|n| n.weight.as_ref())
            .map_or(0, |w| w.len() as u64)
    };
    l.projections()
        .iter()
        .map(|(_, p)| (p.out_features() * p.in_features()) as u64)
        .sum::<u64>()
        + norm(l.input_norm.as_ref())
        + norm(l.attn_sub_norm.as_ref())
        + norm(Some(&l.post_attention_norm))
        + norm(l.ffn_sub_norm.as_ref())
}

fn dtype_of(m: &DenseMatrix) -> Dtype {
    match m.data() {
        DenseData::F32(_) => Dtype::F32,
        DenseData::F16(_) => Dtype::F16,
        DenseData::BF16(_) => Dtype::BF16,
        DenseData::I8 { .. } => Dtype::I8,
    }
}

/// The embedding (or an untied LM head) in the dtype `choice` asks for (see `LmHeadArg`).
fn convert(m: DenseMatrix, choice: LmHeadArg, config: &ModelConfig) -> DenseMatrix {
    let stored = dtype_of(&m);
    let target = match choice {
        LmHeadArg::Keep => stored,
        LmHeadArg::F16 => Dtype::F16,
        LmHeadArg::Bf16 => Dtype::BF16,
        LmHeadArg::F32 => Dtype::F32,
        LmHeadArg::Auto | LmHeadArg::Int8 => match stored {
            Dtype::F32 if config.dtype.as_deref() == Some("bfloat16") => Dtype::BF16,
            Dtype::F32 => Dtype::F16,
            other => other,
        },
    };
    if target == stored {
        return m;
    }
    let (rows, cols) = (m.rows(), m.cols());
    let data = match target {
        Dtype::F16 => DenseData::F16(map_rows(&m, f16::from_f32)),
        Dtype::BF16 => DenseData::BF16(map_rows(&m, bf16::from_f32)),
        _ => DenseData::F32(map_rows(&m, |v| v)),
    };
    DenseMatrix::new(rows, cols, data).expect("same shape")
}

/// Every element of `m`, row by row through f32, mapped by `f` (only the result is allocated
/// beside the source).
fn map_rows<T>(m: &DenseMatrix, f: impl Fn(f32) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(m.rows() * m.cols());
    let mut row = vec![0.0f32; m.cols()];
    for r in 0..m.rows() {
        m.row_into(r, &mut row);
        out.extend(row.iter().map(|&v| f(v)));
    }
    out
}
