//! The machine's read bandwidth, measured in the same run as the model: a multi-threaded
//! streaming read (sum of u64 words) of a buffer several times larger than the caches.

use rayon::prelude::*;
use std::time::Instant;

/// Buffer size: far above any L3 of the machines this runs on.
pub const BUFFER_BYTES: usize = 1 << 30;

/// Best read bandwidth (GB/s, 1e9 bytes) over `passes` streaming passes on `pool`'s threads.
pub fn read_bandwidth_gb_s(pool: &rayon::ThreadPool, passes: usize) -> f64 {
    let words = BUFFER_BYTES / 8;
    let buffer: Vec<u64> = pool.install(|| {
        (0..words)
            .into_par_iter()
            .map(|i| i as u64 * 0x9E37_79B9)
            .collect()
    });
    let threads = pool.current_num_threads();
    let chunk = words.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        let sum: u64 = pool.install(|| {
            buffer
                .par_chunks(chunk)
                .map(|part| {
                    // four independent accumulators keep several loads in flight
                    let mut acc = [0u64; 4];
                    for block in part.chunks_exact(4) {
                        for (a, w) in acc.iter_mut().zip(block) {
                            *a = a.wrapping_add(*w);
                        }
                    }
                    acc.iter().fold(0u64, |s, a| s.wrapping_add(*a))
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max(BUFFER_BYTES as f64 / seconds / 1e9);
    }
    best
}

/// Best device copy bandwidth (GB/s, 1e9 bytes) of the GPU of `backend` over `passes`
/// device-to-device copies of [`BUFFER_BYTES`]: bytes read plus bytes written per second (as
/// CUDA's bandwidthTest counts them), the ceiling a weight-streaming kernel is compared with.
#[cfg(feature = "cuda")]
pub fn device_copy_bandwidth_gb_s(
    backend: &bitnet_kernels::cuda::CudaBackend,
    passes: usize,
) -> anyhow::Result<f64> {
    let stream = backend.stream();
    let err = |e: cudarc::driver::DriverError| anyhow::anyhow!("device copy: {e:?}");
    let src = stream.alloc_zeros::<u8>(BUFFER_BYTES).map_err(err)?;
    let mut dst = stream.alloc_zeros::<u8>(BUFFER_BYTES).map_err(err)?;
    stream.memcpy_dtod(&src, &mut dst).map_err(err)?; // warm-up
    stream.synchronize().map_err(err)?;
    let mut best = 0.0f64;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        stream.memcpy_dtod(&src, &mut dst).map_err(err)?;
        stream.synchronize().map_err(err)?;
        best = best.max(2.0 * BUFFER_BYTES as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}
