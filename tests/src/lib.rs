//! `bitnet-tests`: parity tests of whole models against the fixtures written by
//! `tests/fixtures/make_fixtures.py`, and the helpers that read those fixtures.
//!
//! A fixture is a folder with `fixture.json`, a checkpoint in `model/` and the transformers
//! reference outputs in `expected.safetensors` (see `tests/fixtures/README.md`). The committed
//! fixtures live in `tests/fixtures/`; `BITNET_EXTRA_FIXTURES` (a `:`-separated list of folders,
//! each a fixture or a folder of fixtures) adds checkpoints produced elsewhere the same way.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor of `expected.safetensors`, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I8(Vec<i8>),
}

/// A fixture: its metadata, the checkpoint folder and the reference tensors.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    pub family: String,
    pub dir: PathBuf,
    pub tensors: BTreeMap<String, (Vec<usize>, Expected)>,
}

impl Fixture {
    /// Reads `fixture.json` and `expected.safetensors` of a fixture folder.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let meta_path = dir.join("fixture.json");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&meta_path)
                .map_err(|e| format!("{}: {e}", meta_path.display()))?,
        )
        .map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let field = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let exp_path = dir.join("expected.safetensors");
        let bytes = std::fs::read(&exp_path).map_err(|e| format!("{}: {e}", exp_path.display()))?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", exp_path.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let value = match view.dtype() {
                Dtype::F32 => Expected::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                ),
                Dtype::I64 => Expected::I64(
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ),
                Dtype::I8 => Expected::I8(data.iter().map(|&b| b as i8).collect()),
                other => return Err(format!("{name}: unexpected dtype {other:?}")),
            };
            tensors.insert(name.to_string(), (view.shape().to_vec(), value));
        }
        Ok(Self {
            name: if field("name").is_empty() {
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                field("name")
            },
            family: field("family"),
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    /// The checkpoint folder.
    pub fn model_dir(&self) -> PathBuf {
        self.dir.join("model")
    }

    /// An f32 tensor with its shape; panics with the fixture name when absent.
    pub fn f32(&self, name: &str) -> (&[usize], &[f32]) {
        match self.tensors.get(name) {
            Some((shape, Expected::F32(v))) => (shape, v),
            _ => panic!(
                "{}: expected.safetensors has no f32 tensor {name}",
                self.name
            ),
        }
    }

    /// An integer tensor (i64 or i8) as i64 values; `None` when absent.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.tensors.get(name) {
            Some((_, Expected::I64(v))) => Some(v.clone()),
            Some((_, Expected::I8(v))) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// Integer tensor as u32 token ids; panics when absent.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.ints(name)
            .unwrap_or_else(|| panic!("{}: expected.safetensors has no tensor {name}", self.name))
            .into_iter()
            .map(|v| v as u32)
            .collect()
    }
}

/// The folder of committed fixtures.
pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Fixture folders below `root` (a fixture itself, or a folder of fixtures), sorted.
pub fn fixture_dirs(root: &Path) -> Vec<PathBuf> {
    if root.join("fixture.json").exists() {
        return vec![root.to_path_buf()];
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("fixture.json").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The committed fixtures plus those named by `BITNET_EXTRA_FIXTURES`.
pub fn all_fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = fixture_dirs(&fixtures_root());
    if let Ok(extra) = std::env::var("BITNET_EXTRA_FIXTURES") {
        for root in extra.split(':').filter(|s| !s.is_empty()) {
            let found = fixture_dirs(Path::new(root));
            assert!(
                !found.is_empty(),
                "BITNET_EXTRA_FIXTURES: no fixture under {root}"
            );
            dirs.extend(found);
        }
    }
    dirs
}

/// Largest absolute difference between two slices, and the largest |reference| value.
pub fn max_abs_diff(got: &[f32], reference: &[f32]) -> (f32, f32) {
    let diff = got
        .iter()
        .zip(reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (diff, scale)
}
