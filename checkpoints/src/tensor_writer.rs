//! [`TensorFileWriter`]: writes one safetensors file tensor by tensor, without holding the model.
//!
//! The header comes first in a safetensors file but is only known at the end, so the writer
//! reserves room for it (the caller bounds the number of tensors), appends each tensor's bytes
//! as it arrives, and finally writes the header into the reserved room, padded with spaces (the
//! format allows trailing whitespace; `__metadata__.format = "pt"` as transformers expects).
//! [`TensorFileWriter::finish`] flushes and fsyncs. Used by the compression tool; the hooks of
//! [`crate::test_hook`] simulate a full disk and crashes.

use crate::error::CheckpointError;
use crate::test_hook;
use safetensors::Dtype;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Header bytes reserved per tensor (a name of ~60 characters with a 2-D shape and 12-digit
/// offsets takes about 130).
pub const HEADER_BYTES_PER_TENSOR: usize = 256;
/// Header bytes reserved besides the tensors (braces, `__metadata__`).
const HEADER_BASE: usize = 256;

/// One tensor already written.
#[derive(Debug)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// A safetensors file being written (see the module doc).
#[derive(Debug)]
pub struct TensorFileWriter {
    path: PathBuf,
    file: BufWriter<File>,
    header_room: usize,
    entries: Vec<Entry>,
    data_len: u64,
}

/// Tensors written by every writer of this process (for the `tensor:N` test hook).
static TENSORS_WRITTEN: AtomicUsize = AtomicUsize::new(0);

impl TensorFileWriter {
    /// Creates `path` with room for the header of up to `max_tensors` tensors.
    pub fn create(path: &Path, max_tensors: usize) -> Result<Self, CheckpointError> {
        let io = |e| CheckpointError::io(path, e);
        let header_room = (HEADER_BASE + max_tensors * HEADER_BYTES_PER_TENSOR).next_multiple_of(8);
        let file = File::create(path).map_err(io)?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        test_hook::charge(8 + header_room).map_err(io)?;
        file.write_all(&vec![b' '; 8 + header_room]).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header_room,
            entries: Vec::new(),
            data_len: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one tensor; `data` must hold exactly `shape`'s elements of `dtype`.
    pub fn add(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        data: &[u8],
    ) -> Result<(), CheckpointError> {
        let expected = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        if data.len() != expected || self.entries.iter().any(|e| e.name == name) {
            return Err(CheckpointError::Safetensors {
                path: self.path.clone(),
                message: format!(
                    "tensor {name}: {} bytes for {dtype} {shape:?} (expected {expected}), or a \
                     duplicate name",
                    data.len()
                ),
            });
        }
        let io = |e| CheckpointError::io(&self.path, e);
        test_hook::charge(data.len()).map_err(io)?;
        self.file.write_all(data).map_err(io)?;
        let start = self.data_len;
        self.data_len += data.len() as u64;
        self.entries.push(Entry {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            start,
            end: self.data_len,
        });
        let n = TENSORS_WRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
        test_hook::point(&format!("tensor:{n}"));
        Ok(())
    }

    /// Writes the header, flushes and fsyncs; returns the file's size in bytes.
    pub fn finish(mut self) -> Result<u64, CheckpointError> {
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({ "format": "pt", "writer": "bitnet-cluster" }),
        );
        for e in &self.entries {
            header.insert(
                e.name.clone(),
                serde_json::json!({
                    "dtype": e.dtype.to_string(),
                    "shape": e.shape,
                    "data_offsets": [e.start, e.end],
                }),
            );
        }
        let json = serde_json::to_vec(&header).expect("a JSON map serializes");
        if json.len() > self.header_room {
            return Err(CheckpointError::Safetensors {
                path: self.path.clone(),
                message: format!(
                    "header of {} bytes exceeds the {} reserved (more tensors than announced)",
                    json.len(),
                    self.header_room
                ),
            });
        }
        let path = self.path.clone();
        let io = |e| CheckpointError::io(&path, e);
        self.file.flush().map_err(io)?;
        let mut file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        let mut head = Vec::with_capacity(8 + self.header_room);
        head.extend_from_slice(&(self.header_room as u64).to_le_bytes());
        head.extend_from_slice(&json);
        head.resize(8 + self.header_room, b' ');
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&head).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(8 + self.header_room as u64 + self.data_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SafetensorsDir;

    #[test]
    fn written_files_read_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut w = TensorFileWriter::create(&path, 3).unwrap();
        w.add("b", Dtype::U8, &[2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        w.add("a", Dtype::F32, &[1], &1.5f32.to_le_bytes()).unwrap();
        assert!(w.add("c", Dtype::F32, &[2], &[0; 4]).is_err(), "short data");
        let size = w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(st.tensor("a").unwrap().shape(), &[1]);
        let d = SafetensorsDir::open(dir.path()).unwrap();
        assert_eq!(d.tensor("a").unwrap().to_f32().unwrap(), [1.5]);
    }

    #[test]
    fn more_tensors_than_announced_is_an_error_not_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let mut w = TensorFileWriter::create(&path, 0).unwrap();
        for i in 0..10 {
            w.add(
                &format!("a_rather_long_tensor_name_number_{i}"),
                Dtype::U8,
                &[1],
                &[0],
            )
            .unwrap();
        }
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("exceeds the"), "{err}");
    }
}
