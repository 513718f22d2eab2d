//! [`Manifest`]: `manifest.json`, the SHA-256 and size of every file of a compressed
//! checkpoint, written last (before the directory is committed) and checked by
//! `bitnet-cluster ckpt verify` and `--verify` on load ([`crate::verify()`]).

use crate::error::CheckpointError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The value of `format`.
const MANIFEST_FORMAT: &str = "bitnet-cluster-manifest";

/// One file's size and digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// The content of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// File name (relative to the directory) → entry.
    pub files: BTreeMap<String, FileEntry>,
}

/// Size and lowercase hex SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<FileEntry, CheckpointError> {
    let io = |e| CheckpointError::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileEntry { bytes, sha256 })
}

/// The regular files of `dir` other than the manifest, sorted; a subdirectory is an error.
fn listed_files(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))? {
        let entry = entry.map_err(|e| CheckpointError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST_FILE {
            continue;
        }
        if !entry.path().is_file() {
            return Err(CheckpointError::Integrity {
                path: entry.path(),
                message: "not a regular file (a checkpoint directory holds only files)".into(),
            });
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

impl Manifest {
    /// Hashes every file of `dir` (but `manifest.json`).
    pub fn build(dir: &Path) -> Result<Self, CheckpointError> {
        let mut files = BTreeMap::new();
        for name in listed_files(dir)? {
            files.insert(name.clone(), sha256_file(&dir.join(&name))?);
        }
        Ok(Self {
            format: MANIFEST_FORMAT.into(),
            version: 1,
            files,
        })
    }

    /// Writes `dir/manifest.json` and fsyncs it.
    pub fn write(&self, dir: &Path) -> Result<(), CheckpointError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        crate::test_hook::charge(text.len()).map_err(|e| CheckpointError::io(&path, e))?;
        std::fs::write(&path, text)
            .and_then(|_| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| CheckpointError::io(&path, e))
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, CheckpointError> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(CheckpointError::NotFound {
                path,
                what: "manifest.json (only `ckpt compress` outputs can be verified)",
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::io(&path, e))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
                path: path.clone(),
                source,
            })?;
        if manifest.format != MANIFEST_FORMAT || manifest.version != 1 {
            return Err(CheckpointError::Integrity {
                path,
                message: format!(
                    "unknown manifest {:?} version {}",
                    manifest.format, manifest.version
                ),
            });
        }
        Ok(manifest)
    }

    /// Re-hashes every file of `dir` against the manifest: a missing, extra, resized or changed
    /// file is an error naming it. Returns the bytes hashed.
    pub fn check(&self, dir: &Path) -> Result<u64, CheckpointError> {
        let present = listed_files(dir)?;
        if let Some(extra) = present.iter().find(|n| !self.files.contains_key(*n)) {
            return Err(CheckpointError::Integrity {
                path: dir.join(extra),
                message: "is not listed in manifest.json".into(),
            });
        }
        let mut total = 0;
        for (name, want) in &self.files {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(CheckpointError::Integrity {
                    path,
                    message: "is listed in manifest.json but missing".into(),
                });
            }
            let got = sha256_file(&path)?;
            if got.bytes != want.bytes {
                return Err(CheckpointError::Integrity {
                    path,
                    message: format!("size {} bytes, manifest says {}", got.bytes, want.bytes),
                });
            }
            if got.sha256 != want.sha256 {
                return Err(CheckpointError::Integrity {
                    path,
                    message: format!(
                        "SHA-256 {} does not match the manifest's {} (the file is corrupt)",
                        got.sha256, want.sha256
                    ),
                });
            }
            total += got.bytes;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        let e = sha256_file(&dir.path().join("a")).unwrap();
        assert_eq!(
            e.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(e.bytes, 3);
    }

    #[test]
    fn check_names_changed_missing_and_extra_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("a"), b"abc").unwrap();
        std::fs::write(p.join("b"), b"def").unwrap();
        let m = Manifest::build(p).unwrap();
        m.write(p).unwrap();
        assert_eq!(Manifest::read(p).unwrap(), m);
        assert_eq!(m.check(p).unwrap(), 6);
        std::fs::write(p.join("b"), b"deg").unwrap();
        let err = m.check(p).unwrap_err().to_string();
        assert!(
            err.contains("/b: SHA-256") && err.contains("corrupt"),
            "{err}"
        );
        std::fs::write(p.join("b"), b"def").unwrap();
        std::fs::write(p.join("c"), b"").unwrap();
        let err = m.check(p).unwrap_err().to_string();
        assert!(err.contains("/c: is not listed"), "{err}");
        std::fs::remove_file(p.join("c")).unwrap();
        std::fs::remove_file(p.join("a")).unwrap();
        let err = m.check(p).unwrap_err().to_string();
        assert!(
            err.contains("/a: is listed in manifest.json but missing"),
            "{err}"
        );
    }
}
