//! Device copies of the weight matrices and the cache that maps a host matrix to its copy.
//!
//! The [`crate::Backend`] ops receive host matrices (`&TernaryMatrix`, `&DenseMatrix`,
//! `&SignMatrix`); the first call uploads each one and later calls reuse the copy. The cache
//! key is the address and length of the host data plus a fingerprint (shape, β and a sample
//! of the bytes), so a matrix freed and another allocated at the same address is uploaded
//! again rather than confused. Ternary weights keep the canonical layout of
//! `crate::packing` unchanged (the kernels read it directly, see `kernels/cuda/ternary.cu`).

use super::compile::fnv1a;
use super::CudaError;
use crate::{DenseData, DenseMatrix, SignMatrix, TernaryMatrix};
use cudarc::driver::{CudaSlice, CudaStream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A ternary matrix on the device: the packed bytes and the shape.
pub struct DeviceTernary {
    pub rows: usize,
    pub cols: usize,
    pub blocks: usize,
    pub beta: f32,
    pub packed: CudaSlice<u8>,
}

impl DeviceTernary {
    /// Uploads `w` as it is packed.
    pub fn upload(stream: &Arc<CudaStream>, w: &TernaryMatrix) -> Result<Self, CudaError> {
        Ok(Self {
            rows: w.rows(),
            cols: w.cols(),
            blocks: w.blocks(),
            beta: w.beta(),
            packed: stream
                .clone_htod(w.packed())
                .map_err(|e| CudaError::driver("uploading a ternary matrix", e))?,
        })
    }

    /// Activation row length the kernels read (`blocks · 128`).
    pub fn padded_cols(&self) -> usize {
        self.blocks * crate::packing::BLOCK_COLS
    }
}

/// A dense matrix on the device, in its stored dtype (16-bit floats as raw bits).
pub enum DeviceDense {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
    BF16(CudaSlice<u16>),
    I8 {
        values: CudaSlice<i8>,
        scales: CudaSlice<f32>,
    },
}

/// A dense matrix on the device with its shape.
pub struct DeviceDenseMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: DeviceDense,
}

impl DeviceDenseMatrix {
    /// Uploads `m` in its dtype.
    pub fn upload(stream: &Arc<CudaStream>, m: &DenseMatrix) -> Result<Self, CudaError> {
        let err = |e| CudaError::driver("uploading a dense matrix", e);
        let data = match m.data() {
            DenseData::F32(v) => DeviceDense::F32(stream.clone_htod(v).map_err(err)?),
            DenseData::F16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                DeviceDense::F16(stream.clone_htod(&bits).map_err(err)?)
            }
            DenseData::BF16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                DeviceDense::BF16(stream.clone_htod(&bits).map_err(err)?)
            }
            DenseData::I8 { values, scales } => DeviceDense::I8 {
                values: stream.clone_htod(values).map_err(err)?,
                scales: stream.clone_htod(scales).map_err(err)?,
            },
        };
        Ok(Self {
            rows: m.rows(),
            cols: m.cols(),
            data,
        })
    }
}

/// A sign matrix on the device (`rows × cols/8` bytes, the host packing).
pub struct DeviceSign {
    pub rows: usize,
    pub cols: usize,
    pub bits: CudaSlice<u8>,
}

impl DeviceSign {
    /// Uploads `m`'s bits.
    pub fn upload(stream: &Arc<CudaStream>, m: &SignMatrix) -> Result<Self, CudaError> {
        Ok(Self {
            rows: m.rows(),
            cols: m.cols(),
            bits: stream
                .clone_htod(m.bits())
                .map_err(|e| CudaError::driver("uploading a sign matrix", e))?,
        })
    }
}

/// Fingerprint of a host buffer: its shape words and up to 64 evenly spaced 8-byte samples.
pub fn fingerprint(bytes: &[u8], shape: &[u64]) -> u64 {
    let shape_bytes: Vec<u8> = shape.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut sample = Vec::with_capacity(64 * 8);
    if !bytes.is_empty() {
        let step = (bytes.len() / 64).max(1);
        for i in (0..bytes.len()).step_by(step).take(64) {
            sample.extend_from_slice(&bytes[i..(i + 8).min(bytes.len())]);
        }
        sample.extend_from_slice(&bytes[bytes.len().saturating_sub(8)..]);
    }
    fnv1a(&[&shape_bytes, &sample])
}

/// Host data address and length: the cache key.
type Key = (usize, usize);

/// One cache of device copies per matrix kind.
pub struct Cache<T> {
    entries: Mutex<HashMap<Key, (u64, Arc<T>)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Cache<T> {
    /// The copy of the host buffer `bytes` (fingerprinted with `shape`), made by `upload` on a miss.
    pub fn get_or_upload(
        &self,
        bytes: &[u8],
        shape: &[u64],
        upload: impl FnOnce() -> Result<T, CudaError>,
    ) -> Result<Arc<T>, CudaError> {
        let key = (bytes.as_ptr() as usize, bytes.len());
        let print = fingerprint(bytes, shape);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, copy)) = entries.get(&key) {
            if *p == print {
                return Ok(copy.clone());
            }
        }
        let copy = Arc::new(upload()?);
        entries.insert(key, (print, copy.clone()));
        Ok(copy)
    }

    /// Drops every copy (device memory is freed once no op holds one).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Copies held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no copy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of a dense matrix's data (what its cache entry is keyed on).
pub fn dense_bytes(m: &DenseMatrix) -> &[u8] {
    fn bytes<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain-old-data element types; the slice is only read as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }
    match m.data() {
        DenseData::F32(v) => bytes(v),
        DenseData::F16(v) => bytes(v),
        DenseData::BF16(v) => bytes(v),
        DenseData::I8 { values, .. } => bytes(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_see_shape_and_content() {
        let a = vec![1u8; 1000];
        let mut b = a.clone();
        b[999] = 2;
        assert_ne!(fingerprint(&a, &[1, 2]), fingerprint(&a, &[2, 1]));
        assert_ne!(fingerprint(&a, &[1]), fingerprint(&b, &[1]));
        assert_eq!(fingerprint(&a, &[1]), fingerprint(&a.clone(), &[1]));
        assert_eq!(fingerprint(&[], &[0]), fingerprint(&[], &[0]));
    }

    #[test]
    fn cache_reuses_and_replaces_by_fingerprint() {
        let cache: Cache<u32> = Cache::default();
        let mut data = vec![7u8; 64];
        let first = cache.get_or_upload(&data, &[1], || Ok(1)).unwrap();
        let again = cache.get_or_upload(&data, &[1], || Ok(2)).unwrap();
        assert_eq!((*first, *again, cache.len()), (1, 1, 1));
        data[63] = 8; // same address and length, other content: uploaded again
        let changed = cache.get_or_upload(&data, &[1], || Ok(3)).unwrap();
        assert_eq!((*changed, cache.len()), (3, 1));
        cache.clear();
        assert!(cache.is_empty());
    }
}
