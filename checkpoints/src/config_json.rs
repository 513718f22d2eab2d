//! `config.json` and `generation_config.json` of a model directory, read once as JSON and turned
//! into a [`ModelConfig`] ([`RawConfig::to_model_config`]).
//!
//! Accepts the spellings of every transformers version (FORMATS.md §2): θ as `rope_theta` or
//! `rope_parameters.rope_theta`, the dtype as `torch_dtype` or `dtype`, optional `head_dim` and
//! `num_key_value_heads`, eos as a number or a list. Family detection is [`crate::family`].

use crate::config::{Activation, BitNetQuantization, Family, ModelConfig};
use crate::error::CheckpointError;
use crate::family::detect_family;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Default RoPE θ when the config names none.
const DEFAULT_ROPE_THETA: f32 = 10000.0;
/// Default `max_position_embeddings` when the config names none (the transformers default).
const DEFAULT_MAX_POSITIONS: usize = 2048;
/// Default RMSNorm eps (LLaMA and BitNet config classes).
const DEFAULT_RMS_NORM_EPS: f32 = 1e-6;

/// The JSON configuration files of a model directory, not yet interpreted.
#[derive(Clone, Debug)]
pub struct RawConfig {
    /// Path of `config.json`.
    pub path: PathBuf,
    pub json: Value,
    /// `generation_config.json`, when present.
    pub generation: Option<(PathBuf, Value)>,
}

impl RawConfig {
    /// Reads `config.json` (required), `generation_config.json` (optional) and refuses a
    /// `quantize_config.json` other than the plain (`bitnet`) or fused unpermuted `bitblas` format
    /// (FORMATS.md §2.D).
    pub fn read(dir: &Path) -> Result<Self, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::NotFound {
                path: dir.to_path_buf(),
                what: "model directory",
            });
        }
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(CheckpointError::NotFound {
                path,
                what: "config.json",
            });
        }
        let json = read_json(&path)?;
        if !json.is_object() {
            return Err(CheckpointError::config(&path, "not a JSON object"));
        }
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.is_file() {
            let g = read_json(&gen_path)?;
            Some((gen_path, g))
        } else {
            None
        };
        let bitblas_path = dir.join("quantize_config.json");
        if bitblas_path.is_file() {
            let q = read_json(&bitblas_path)?;
            crate::storage::check_quantize_config(&bitblas_path, &q)?;
        }
        Ok(Self {
            path,
            json,
            generation,
        })
    }

    /// Interprets the configuration. `tensor_names` (when the weights are known) settles the
    /// family of plain llama configs and an absent `tie_word_embeddings`.
    pub fn to_model_config(
        &self,
        tensor_names: Option<&[&str]>,
    ) -> Result<ModelConfig, CheckpointError> {
        let f = Fields {
            path: &self.path,
            json: &self.json,
        };
        let family = detect_family(&self.path, &self.json, tensor_names)?;
        let architecture = self
            .json
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let model_type = f.string("model_type")?.unwrap_or_default();

        let hidden_size = f.required_usize("hidden_size")?;
        let intermediate_size = f.required_usize("intermediate_size")?;
        let num_layers = f.required_usize("num_hidden_layers")?;
        let num_heads = f.required_usize("num_attention_heads")?;
        let vocab_size = f.required_usize("vocab_size")?;
        let num_kv_heads = f.usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(CheckpointError::config(
                &self.path,
                format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"),
            ));
        }
        let head_dim = match f.usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(CheckpointError::config(
                    &self.path,
                    format!("hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads} and no head_dim is given"),
                ))
            }
        };
        let max_position_embeddings = match f.usize("max_position_embeddings")? {
            Some(n) => n,
            None => {
                tracing::warn!(path = %self.path.display(), "no max_position_embeddings; assuming {DEFAULT_MAX_POSITIONS}");
                DEFAULT_MAX_POSITIONS
            }
        };
        let rms_norm_eps = f.f32("rms_norm_eps")?.unwrap_or(DEFAULT_RMS_NORM_EPS);
        let rope_theta = self.rope_theta(&f)?;
        let activation = match f.string("hidden_act")?.as_deref() {
            Some("silu") => Activation::Silu,
            Some("relu2") => Activation::Relu2,
            None if family == Family::BitNet => Activation::Relu2,
            None => Activation::Silu,
            Some(other) => {
                return Err(CheckpointError::config(
                    &self.path,
                    format!("unsupported hidden_act {other:?} (supported: \"silu\", \"relu2\")"),
                ))
            }
        };
        for key in ["attention_bias", "mlp_bias"] {
            if f.bool(key)? == Some(true) {
                return Err(CheckpointError::config(
                    &self.path,
                    format!("{key}: true is not supported (projections have no bias)"),
                ));
            }
        }
        let tie_word_embeddings = match f.bool("tie_word_embeddings")? {
            Some(t) => t,
            // transformers omits the key when it equals the default: the weights tell.
            None => match tensor_names {
                Some(names) => !names.contains(&"lm_head.weight"),
                None => matches!(family, Family::OneBitLlm | Family::BitNet),
            },
        };
        let dtype = match f.string("torch_dtype")? {
            Some(d) => Some(d),
            None => f.string("dtype")?,
        };
        let quantization = self.quantization(&f, family)?;

        let mut bos_token_id = token_id(&self.path, &self.json, "bos_token_id")?;
        let mut eos_token_ids = token_ids(&self.path, &self.json, "eos_token_id")?;
        let pad_token_id = token_id(&self.path, &self.json, "pad_token_id")?;
        if let Some((gen_path, gen)) = &self.generation {
            if let Some(bos) = token_id(gen_path, gen, "bos_token_id")? {
                bos_token_id = Some(bos);
            }
            let eos = token_ids(gen_path, gen, "eos_token_id")?;
            if !eos.is_empty() {
                eos_token_ids = eos;
            }
        }

        Ok(ModelConfig {
            family,
            architecture,
            model_type,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            activation,
            tie_word_embeddings,
            dtype,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            quantization,
        })
    }

    /// θ from `rope_theta` or `rope_parameters.rope_theta`; refuses any RoPE scaling.
    fn rope_theta(&self, f: &Fields<'_>) -> Result<f32, CheckpointError> {
        let mut theta = f.f32("rope_theta")?;
        for key in ["rope_scaling", "rope_parameters"] {
            let Some(v) = self.json.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let unsupported = || CheckpointError::UnsupportedRopeScaling {
                path: self.path.clone(),
                found: format!("{key}: {v}"),
            };
            let Some(obj) = v.as_object() else {
                return Err(unsupported());
            };
            let rope_type = obj.get("rope_type").or_else(|| obj.get("type"));
            match rope_type {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "default" => {}
                Some(_) => return Err(unsupported()),
            }
            if theta.is_none() {
                if let Some(t) = obj.get("rope_theta").filter(|t| !t.is_null()) {
                    let t = t.as_f64().ok_or_else(|| {
                        CheckpointError::config(
                            &self.path,
                            format!("{key}.rope_theta is not a number: {t}"),
                        )
                    })?;
                    theta = Some(t as f32);
                }
            }
        }
        Ok(theta.unwrap_or(DEFAULT_ROPE_THETA))
    }

    /// `quantization_config` of family B (defaults when absent) and of a BitNet-quantized
    /// llama (family F); `None` for the other families.
    fn quantization(
        &self,
        f: &Fields<'_>,
        family: Family,
    ) -> Result<Option<BitNetQuantization>, CheckpointError> {
        let q = self
            .json
            .get("quantization_config")
            .filter(|q| !q.is_null());
        if let Some(q) = q {
            let method = q.get("quant_method").and_then(Value::as_str);
            if method.is_some_and(|m| m != "bitnet") {
                return Err(CheckpointError::config(
                    &self.path,
                    format!(
                        "unsupported quantization_config.quant_method {:?} (only \"bitnet\")",
                        method.unwrap_or_default()
                    ),
                ));
            }
        }
        let wants = match family {
            Family::BitNet => true,
            Family::LlamaBitNet => q.is_some(),
            _ => false,
        };
        if !wants {
            return Ok(None);
        }
        let empty = Value::Object(Default::default());
        let qf = Fields {
            path: f.path,
            json: q.unwrap_or(&empty),
        };
        let linear_class = qf
            .string("linear_class")?
            .unwrap_or_else(|| "bitlinear".into());
        if !matches!(linear_class.as_str(), "bitlinear" | "autobitlinear") {
            return Err(CheckpointError::config(
                &self.path,
                format!("unsupported quantization_config.linear_class {linear_class:?} (\"bitlinear\" or \"autobitlinear\")"),
            ));
        }
        let mode = qf
            .string("quantization_mode")?
            .unwrap_or_else(|| "offline".into());
        if !matches!(mode.as_str(), "offline" | "online") {
            return Err(CheckpointError::config(
                &self.path,
                format!("unsupported quantization_config.quantization_mode {mode:?} (\"offline\" or \"online\")"),
            ));
        }
        Ok(Some(BitNetQuantization {
            linear_class,
            mode,
            use_rms_norm: qf.bool("use_rms_norm")?.unwrap_or(false),
            rms_norm_eps: qf.f32("rms_norm_eps")?.unwrap_or(1e-6),
        }))
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Typed access to the keys of one JSON object; `null` reads as absent.
struct Fields<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, what: &str, v: &Value) -> CheckpointError {
        CheckpointError::config(self.path, format!("{key} must be {what}, found {v}"))
    }

    fn usize(&self, key: &str) -> Result<Option<usize>, CheckpointError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    fn required_usize(&self, key: &str) -> Result<usize, CheckpointError> {
        match self.usize(key)? {
            Some(0) => Err(CheckpointError::config(self.path, format!("{key} is 0"))),
            Some(n) => Ok(n),
            None => Err(CheckpointError::config(
                self.path,
                format!("missing required field {key}"),
            )),
        }
    }

    fn f32(&self, key: &str) -> Result<Option<f32>, CheckpointError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| self.wrong(key, "a number", v))
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, CheckpointError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(key, "true or false", v))
            })
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, CheckpointError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(key, "a string", v))
            })
            .transpose()
    }
}

/// A token id (a number, or `null`/absent).
fn token_id(path: &Path, json: &Value, key: &str) -> Result<Option<u32>, CheckpointError> {
    let ids = token_ids(path, json, key)?;
    match ids.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(*id)),
        _ if key == "pad_token_id" => Ok(ids.first().copied()),
        _ => Err(CheckpointError::config(
            path,
            format!("{key} must be one token id, found {ids:?}"),
        )),
    }
}

/// Token ids given as a number or a list of numbers (`null`/absent: none), deduplicated.
fn token_ids(path: &Path, json: &Value, key: &str) -> Result<Vec<u32>, CheckpointError> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                CheckpointError::config(
                    path,
                    format!("{key} must be a token id or a list of them, found {v}"),
                )
            })
    };
    let mut ids = match json.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        Some(v) => vec![one(v)?],
    };
    let mut seen = Vec::with_capacity(ids.len());
    ids.retain(|id| {
        let fresh = !seen.contains(id);
        seen.push(*id);
        fresh
    });
    Ok(ids)
}
