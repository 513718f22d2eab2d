//! [`OutputDir`]: an output directory that appears whole or not at all.
//!
//! Everything is written into a temporary directory beside the destination
//! (`.<name>.partial-<pid>`, same filesystem); [`OutputDir::commit`] fsyncs every file and the
//! directory, then puts it in place with one atomic rename — or, when a previous output exists,
//! one atomic exchange (`renameat2(RENAME_EXCHANGE)` on Linux) followed by removing the old
//! tree — and fsyncs the parent. A process killed at any point therefore leaves the destination
//! absent or holding the previous complete output, plus at most a stale temporary directory,
//! which the next run for the same destination removes. Dropping an uncommitted `OutputDir`
//! (an error, e.g. a full disk) removes the temporary directory.

use crate::error::CheckpointError;
use crate::manifest::MANIFEST_FILE;
use crate::test_hook;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A destination and the temporary directory being filled for it.
#[derive(Debug)]
pub struct OutputDir {
    dest: PathBuf,
    temp: PathBuf,
    committed: bool,
}

/// The temporary-directory prefix for a destination named `name`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

impl OutputDir {
    /// Prepares to write `dest`: it must not exist, or be an empty directory, or hold a previous
    /// output (a `manifest.json`). Stale temporary directories of dead runs are removed.
    pub fn create(dest: &Path) -> Result<Self, CheckpointError> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CheckpointError::Config {
                path: dest.to_path_buf(),
                message: "the output must be a directory path with a UTF-8 name".into(),
            })?
            .to_string();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(CheckpointError::NotFound {
                path: parent,
                what: "parent directory of the output",
            });
        }
        if dest.exists() {
            let previous =
                dest.is_dir() && (dest.join(MANIFEST_FILE).is_file() || is_empty_dir(dest));
            if !previous {
                return Err(CheckpointError::Config {
                    path: dest.to_path_buf(),
                    message: "exists and is not a previous output of `ckpt compress` (no \
                              manifest.json); remove it or choose another --output"
                        .into(),
                });
            }
        }
        remove_stale_temps(&parent, &name);
        let temp = parent.join(format!("{}{}", temp_prefix(&name), std::process::id()));
        if temp.exists() {
            std::fs::remove_dir_all(&temp).map_err(|e| CheckpointError::io(&temp, e))?;
        }
        std::fs::create_dir(&temp).map_err(|e| CheckpointError::io(&temp, e))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            temp,
            committed: false,
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Fsyncs every file and the directory, then moves it into place (see the module doc).
    pub fn commit(mut self) -> Result<(), CheckpointError> {
        let entries =
            std::fs::read_dir(&self.temp).map_err(|e| CheckpointError::io(&self.temp, e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| CheckpointError::io(&self.temp, e))?
                .path();
            fsync(&path)?;
        }
        fsync(&self.temp)?;
        test_hook::point("before-commit");
        if self.dest.exists() {
            exchange(&self.temp, &self.dest)?;
            test_hook::point("after-swap");
            // `temp` now holds the previous output.
            std::fs::remove_dir_all(&self.temp).map_err(|e| CheckpointError::io(&self.temp, e))?;
        } else {
            std::fs::rename(&self.temp, &self.dest)
                .map_err(|e| CheckpointError::io(&self.dest, e))?;
        }
        self.committed = true;
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut rd| rd.next().is_none())
}

/// Removes `.<name>.partial-<pid>` directories whose process is gone.
fn remove_stale_temps(parent: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) || pid == std::process::id() as i32 {
            tracing::info!(path = %entry.path().display(), "removing a stale partial output");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// fsync of a file or a directory.
fn fsync(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| CheckpointError::io(path, e))
}

/// Atomically exchanges two directory entries.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<(), CheckpointError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| CheckpointError::Config {
            path: p.to_path_buf(),
            message: "path holds a NUL byte".into(),
        })
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths relative to the current directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(CheckpointError::io(b, std::io::Error::last_os_error()))
    }
}

/// Without an atomic exchange: move the old output aside, then the new one in (a crash between
/// the two leaves the destination absent and the previous output in the stale temp).
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<(), CheckpointError> {
    let aside = a.with_extension("old");
    std::fs::rename(b, &aside).map_err(|e| CheckpointError::io(b, e))?;
    std::fs::rename(a, b).map_err(|e| CheckpointError::io(b, e))?;
    std::fs::rename(&aside, a).map_err(|e| CheckpointError::io(a, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_a_previous_output_and_drop_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        let o = OutputDir::create(&dest).unwrap();
        std::fs::write(o.path().join(MANIFEST_FILE), b"1").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(dest.join(MANIFEST_FILE)).unwrap(), b"1");

        let o = OutputDir::create(&dest).unwrap();
        std::fs::write(o.path().join(MANIFEST_FILE), b"2").unwrap();
        let temp = o.path().to_path_buf();
        drop(o);
        assert!(!temp.exists(), "an uncommitted output is removed");
        assert_eq!(std::fs::read(dest.join(MANIFEST_FILE)).unwrap(), b"1");

        let o = OutputDir::create(&dest).unwrap();
        std::fs::write(o.path().join(MANIFEST_FILE), b"3").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(dest.join(MANIFEST_FILE)).unwrap(), b"3");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the output is left: {names:?}");
    }

    #[test]
    fn refuses_a_foreign_directory_and_removes_stale_temps() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("mine");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("precious.txt"), b"x").unwrap();
        let err = OutputDir::create(&dest).unwrap_err().to_string();
        assert!(err.contains("is not a previous output"), "{err}");
        // A temp of a process that cannot exist (pid 0 is never a user process here).
        let stale = root.path().join(".other.partial-999999999");
        std::fs::create_dir(&stale).unwrap();
        let o = OutputDir::create(&root.path().join("other")).unwrap();
        assert!(!stale.exists());
        drop(o);
    }
}
