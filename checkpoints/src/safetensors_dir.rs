//! The weight files of a model directory: `model.safetensors`, or every shard listed in
//! `model.safetensors.index.json`, memory-mapped, with tensor lookup by name.
//!
//! Only the files the model names are opened; other `*.safetensors` files are ignored. A
//! directory whose only weights are a zip-format `pytorch_model.bin` is read through the
//! restricted pickle reader ([`crate::pickle`]: tensor records only, nothing executed; the
//! crate accepts it for OneBit checkpoints only); other pickles are refused
//! ([`CheckpointError::Pickle`]). Consumed by [`crate::loader`] and [`mod@crate::inspect`].

use crate::error::CheckpointError;
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The PyTorch pickle read by the restricted reader.
pub const PICKLE_FILE: &str = "pytorch_model.bin";
/// A sharded pickle's index (refused).
const PICKLE_INDEX: &str = "pytorch_model.bin.index.json";

/// One memory-mapped safetensors file with its parsed header.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
    /// Tensor names in data-offset order.
    order: Vec<String>,
}

/// A tensor found in one of the files: dtype, shape and raw little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    /// The file that holds it.
    pub path: &'a Path,
}

/// The model's safetensors files, opened and indexed by tensor name.
#[derive(Debug)]
pub struct SafetensorsDir {
    /// `model.safetensors` or `model.safetensors.index.json`: what error messages name.
    source: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: BTreeMap<String, usize>,
}

impl SafetensorsDir {
    /// Opens the weights of the model directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::NotFound {
                path: dir.to_path_buf(),
                what: "model directory",
            });
        }
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        if index_path.is_file() {
            Self::open_sharded(dir, &index_path)
        } else if single_path.is_file() {
            Self::open_file(&single_path)
        } else if dir.join(PICKLE_FILE).is_file() && !dir.join(PICKLE_INDEX).exists() {
            Self::open_pickle(&dir.join(PICKLE_FILE))
        } else {
            Err(no_weights_error(dir))
        }
    }

    /// Opens one safetensors file on its own (a rank's file of a pre-sharded checkpoint).
    pub fn open_file(path: &Path) -> Result<Self, CheckpointError> {
        if !path.is_file() {
            return Err(CheckpointError::NotFound {
                path: path.to_path_buf(),
                what: "weight file",
            });
        }
        let shard = open_shard(path)?;
        let index = shard.order.iter().map(|n| (n.clone(), 0)).collect();
        Ok(Self {
            source: path.to_path_buf(),
            shards: vec![shard],
            index,
        })
    }

    /// Reads the tensor records of a zip-format `pytorch_model.bin` with the restricted pickle
    /// reader and maps the file; tensors point into its stored zip entries.
    pub fn open_pickle(path: &Path) -> Result<Self, CheckpointError> {
        let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        // SAFETY: as in `open_shard`: a read-only map of a checkpoint nothing here writes.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
        let records = crate::pickle::read_torch_zip(path, &mmap)?;
        let order: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
        let tensors = records
            .into_iter()
            .map(|r| {
                let info = TensorInfo {
                    dtype: r.dtype,
                    shape: r.shape,
                    data_offsets: (r.start, r.end),
                };
                (r.name, info)
            })
            .collect();
        let index = order.iter().map(|n| (n.clone(), 0)).collect();
        Ok(Self {
            source: path.to_path_buf(),
            shards: vec![Shard {
                path: path.to_path_buf(),
                mmap,
                data_start: 0,
                tensors,
                order,
            }],
            index,
        })
    }

    /// True when the weights come from a pickle (`pytorch_model.bin`).
    pub fn is_pickle(&self) -> bool {
        self.source.ends_with(PICKLE_FILE)
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self, CheckpointError> {
        let text =
            std::fs::read_to_string(index_path).map_err(|e| CheckpointError::io(index_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
                path: index_path.to_path_buf(),
                source,
            })?;
        let bad_index = |message: String| CheckpointError::Safetensors {
            path: index_path.to_path_buf(),
            message,
        };
        let weight_map = json
            .get("weight_map")
            .and_then(|w| w.as_object())
            .ok_or_else(|| bad_index("no \"weight_map\" object".into()))?;
        let mut file_names: Vec<&str> = Vec::new();
        let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(weight_map.len());
        for (name, file) in weight_map {
            let file = file
                .as_str()
                .ok_or_else(|| bad_index(format!("weight_map[{name:?}] is not a file name")))?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(bad_index(format!(
                    "weight_map[{name:?}] = {file:?} is not a file of this directory"
                )));
            }
            if !file_names.contains(&file) {
                file_names.push(file);
            }
            wanted.push((name, file));
        }
        file_names.sort_unstable();
        let mut shards = Vec::with_capacity(file_names.len());
        for file in &file_names {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(CheckpointError::NotFound {
                    path,
                    what: "shard listed in model.safetensors.index.json",
                });
            }
            shards.push(open_shard(&path)?);
        }
        let mut index = BTreeMap::new();
        for (name, file) in wanted {
            let s = file_names.iter().position(|f| *f == file).unwrap_or(0);
            if !shards[s].tensors.contains_key(name) {
                return Err(bad_index(format!(
                    "lists tensor {name} in {file}, which does not hold it"
                )));
            }
            index.insert(name.to_string(), s);
        }
        // Tensors a shard holds that the index forgot still belong to the model.
        for (s, shard) in shards.iter().enumerate() {
            for name in &shard.order {
                if let Some(&other) = index.get(name) {
                    if other != s {
                        return Err(bad_index(format!(
                            "tensor {name} appears in both {} and {}",
                            shards[other].path.display(),
                            shard.path.display()
                        )));
                    }
                } else {
                    index.insert(name.clone(), s);
                }
            }
        }
        Ok(Self {
            source: index_path.to_path_buf(),
            shards,
            index,
        })
    }

    /// The file error messages name for the whole set (`model.safetensors` or the index).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The weight files, in shard order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Sum of the sizes of the weight files.
    pub fn bytes_on_disk(&self) -> u64 {
        self.shards.iter().map(|s| s.mmap.len() as u64).sum()
    }

    /// Drops the mapped pages from this process's resident set (best effort): a streaming
    /// reader (the compression tool) calls it after each layer so its memory stays about one
    /// layer, not the whole file. Later reads fault the pages back in from the file.
    pub fn release_pages(&self) {
        for shard in &self.shards {
            // SAFETY: a read-only shared mapping of a file: MADV_DONTNEED only drops the
            // process's page mappings; the contents are read back from the file on access, so
            // every outstanding slice keeps seeing the same bytes.
            let _ = unsafe {
                shard
                    .mmap
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the files hold no tensor.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<TensorRef<'_>> {
        let (key, &s) = self.index.get_key_value(name)?;
        let shard = &self.shards[s];
        let info = shard.tensors.get(name)?;
        let (start, end) = info.data_offsets;
        // The header was validated against the file length when the shard was opened.
        let data = shard
            .mmap
            .get(shard.data_start + start..shard.data_start + end)?;
        Some(TensorRef {
            name: key,
            dtype: info.dtype,
            shape: &info.shape,
            data,
            path: &shard.path,
        })
    }

    /// The tensor `name`, or [`CheckpointError::MissingTensor`] naming the file set.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>, CheckpointError> {
        self.get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                name: name.to_string(),
                path: self.source.clone(),
            })
    }
}

impl TensorRef<'_> {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The dtype as safetensors spells it (`"BF16"`, `"U8"`, ...).
    pub fn dtype_name(&self) -> String {
        self.dtype.to_string()
    }

    /// Fails with [`CheckpointError::Shape`] unless the shape is `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<(), CheckpointError> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(CheckpointError::Shape {
                name: self.name.to_string(),
                path: self.path.to_path_buf(),
                expected: expected.to_vec(),
                found: self.shape.to_vec(),
            })
        }
    }

    /// Fails with [`CheckpointError::Dtype`] unless the dtype is one of `allowed`.
    pub fn expect_dtype(&self, allowed: &[Dtype]) -> Result<(), CheckpointError> {
        if allowed.contains(&self.dtype) {
            Ok(())
        } else {
            Err(self.dtype_error(allowed))
        }
    }

    fn dtype_error(&self, allowed: &[Dtype]) -> CheckpointError {
        let expected: Vec<String> = allowed.iter().map(|d| d.to_string()).collect();
        CheckpointError::Dtype {
            name: self.name.to_string(),
            path: self.path.to_path_buf(),
            expected: expected.join("/"),
            found: self.dtype.to_string(),
        }
    }

    /// The values as f32 (from F32, F16 or BF16; other dtypes are a dtype error).
    pub fn to_f32(&self) -> Result<Vec<f32>, CheckpointError> {
        let d = self.data;
        Ok(match self.dtype {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return Err(self.dtype_error(&FLOAT_DTYPES)),
        })
    }

    /// The values as f16 (F16 only).
    pub fn to_f16(&self) -> Result<Vec<f16>, CheckpointError> {
        self.expect_dtype(&[Dtype::F16])?;
        Ok(self
            .data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// The values as bf16 (BF16 only).
    pub fn to_bf16(&self) -> Result<Vec<bf16>, CheckpointError> {
        self.expect_dtype(&[Dtype::BF16])?;
        Ok(self
            .data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// Raw bytes of a U8 or I8 tensor (I8 bytes are reinterpreted, two's complement).
    pub fn bytes_u8(&self) -> Result<&[u8], CheckpointError> {
        self.expect_dtype(&[Dtype::U8, Dtype::I8])?;
        Ok(self.data)
    }

    /// The values of an I8 (or U8, reinterpreted) tensor as i8.
    pub fn to_i8(&self) -> Result<Vec<i8>, CheckpointError> {
        Ok(self
            .bytes_u8()?
            .iter()
            .map(|&b| i8::from_le_bytes([b]))
            .collect())
    }
}

/// The float dtypes the readers accept for full-precision tensors.
pub const FLOAT_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

/// Maps `path` and parses its header; a truncated or corrupt file names the file.
fn open_shard(path: &Path) -> Result<Shard, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // SAFETY: the map is read-only; the file is a model checkpoint that nothing in this process
    // writes. Modifying it from outside while it is loaded is documented as unsupported.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&mmap).map_err(|e| CheckpointError::Safetensors {
            path: path.to_path_buf(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
    let order = metadata.offset_keys();
    let tensors = metadata
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    Ok(Shard {
        path: path.to_path_buf(),
        mmap,
        data_start: 8 + header_len,
        tensors,
        order,
    })
}

/// The error for a directory without safetensors weights: a pickle error when there is one.
fn no_weights_error(dir: &Path) -> CheckpointError {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let is_pickle = |n: &str| {
        n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth") || n.ends_with(".ckpt")
    };
    let preferred = ["pytorch_model.bin", "pytorch_model.bin.index.json"];
    if let Some(p) = preferred.iter().find(|p| found.iter().any(|f| f == *p)) {
        return CheckpointError::Pickle { path: dir.join(p) };
    }
    if let Some(p) = found.iter().find(|f| is_pickle(f)) {
        return CheckpointError::Pickle { path: dir.join(p) };
    }
    let weights_like: Vec<String> = found
        .into_iter()
        .filter(|f| f.ends_with(".safetensors") || f.ends_with(".gguf"))
        .collect();
    CheckpointError::NoWeights {
        dir: dir.to_path_buf(),
        found: weights_like,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_single_file_values_in_every_float_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let vals = [1.5f32, -2.0, 0.25];
        let h: Vec<u8> = vals
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let b: Vec<u8> = vals
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect();
        write(
            &dir.path().join(SINGLE_FILE),
            &[
                ("a", Dtype::F32, vec![3], f32_bytes(&vals)),
                ("b", Dtype::F16, vec![1, 3], h),
                ("c", Dtype::BF16, vec![3, 1], b),
                ("d", Dtype::I8, vec![2], vec![0xff, 0x01]),
            ],
        );
        let st = SafetensorsDir::open(dir.path()).unwrap();
        assert_eq!(st.names().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        for n in ["a", "b", "c"] {
            assert_eq!(st.tensor(n).unwrap().to_f32().unwrap(), vals, "{n}");
        }
        assert_eq!(st.tensor("b").unwrap().shape, &[1, 3]);
        let d = st.tensor("d").unwrap();
        assert_eq!(d.to_i8().unwrap(), vec![-1, 1]);
        assert!(matches!(
            d.to_f32(),
            Err(CheckpointError::Dtype { ref found, .. }) if found == "I8"
        ));
        assert!(matches!(
            st.tensor("zzz"),
            Err(CheckpointError::MissingTensor { ref name, .. }) if name == "zzz"
        ));
    }

    #[test]
    fn sharded_index_reads_every_listed_shard_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            &p.join("model-00001-of-00002.safetensors"),
            &[("x", Dtype::F32, vec![1], f32_bytes(&[1.0]))],
        );
        write(
            &p.join("model-00002-of-00002.safetensors"),
            &[("y", Dtype::F32, vec![1], f32_bytes(&[2.0]))],
        );
        write(
            &p.join("adapter.safetensors"),
            &[("z", Dtype::F32, vec![1], f32_bytes(&[3.0]))],
        );
        std::fs::write(
            p.join(INDEX_FILE),
            r#"{"metadata": {"total_size": 8}, "weight_map": {
                "x": "model-00001-of-00002.safetensors",
                "y": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let st = SafetensorsDir::open(p).unwrap();
        assert_eq!(st.names().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(st.tensor("y").unwrap().to_f32().unwrap(), [2.0]);
        assert!(st
            .tensor("y")
            .unwrap()
            .path
            .ends_with("model-00002-of-00002.safetensors"));
        assert_eq!(st.files().len(), 2);
    }

    #[test]
    fn index_naming_a_tensor_its_shard_lacks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(
            &p.join("a.safetensors"),
            &[("x", Dtype::F32, vec![1], f32_bytes(&[1.0]))],
        );
        std::fs::write(
            p.join(INDEX_FILE),
            r#"{"weight_map": {"x": "a.safetensors", "w": "a.safetensors"}}"#,
        )
        .unwrap();
        let err = SafetensorsDir::open(p).unwrap_err().to_string();
        assert!(err.contains("lists tensor w in a.safetensors"), "{err}");
        std::fs::write(
            p.join(INDEX_FILE),
            r#"{"weight_map": {"x": "b.safetensors"}}"#,
        )
        .unwrap();
        let err = SafetensorsDir::open(p).unwrap_err();
        assert!(
            matches!(err, CheckpointError::NotFound { ref path, .. } if path.ends_with("b.safetensors")),
            "{err}"
        );
    }

    #[test]
    fn truncated_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        write(&path, &[("a", Dtype::F32, vec![4], f32_bytes(&[1.0; 4]))]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Safetensors { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("model.safetensors: not a valid safetensors file"),
            "{msg}"
        );
        std::fs::write(&path, b"").unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Safetensors { .. }), "{err}");
    }

    #[test]
    fn pickle_only_directory_is_refused_and_safetensors_win_over_pickles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::PickleRefused { ref path, .. } if path.ends_with("pytorch_model.bin")),
            "{err}"
        );
        write(
            &dir.path().join(SINGLE_FILE),
            &[("a", Dtype::F32, vec![1], f32_bytes(&[7.0]))],
        );
        let st = SafetensorsDir::open(dir.path()).unwrap();
        assert_eq!(st.tensor("a").unwrap().to_f32().unwrap(), [7.0]);
    }

    #[test]
    fn other_pickle_names_and_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::NoWeights { .. }), "{err}");
        std::fs::write(dir.path().join("consolidated.pth"), b"x").unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Pickle { ref path } if path.ends_with("consolidated.pth")),
            "{err}"
        );
        let err = SafetensorsDir::open(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(
            err,
            CheckpointError::NotFound {
                what: "model directory",
                ..
            }
        ));
    }
}
