//! Device collectives on a GPU (feature `cuda`; NCCL parts with `nccl`): [`HostStaged`] with
//! two ranks on one GPU over a thread group, and NCCL with one rank per visible GPU plus the
//! deadline of a join that never completes. Without a GPU the tests print why they skipped;
//! with `BITNET_REQUIRE_CUDA=1` a missing GPU is a failure.
#![cfg(feature = "cuda")]

use bitnet_kernels::cuda::CudaBackend;
use bitnet_worker::collective::{DeviceCollective, HostStaged, LocalGroup};

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("BITNET_REQUIRE_CUDA").map_or(true, |v| v != "1"),
                "BITNET_REQUIRE_CUDA=1 but {e}"
            );
            println!("collective_cuda: skipped: {e}");
            None
        }
    }
}

#[test]
fn host_staged_reduces_device_buffers_of_two_ranks_on_one_gpu() {
    let Some(b) = backend() else { return };
    let ranks = LocalGroup::ranks(2);
    std::thread::scope(|s| {
        for (r, c) in ranks.into_iter().enumerate() {
            let b = &b;
            s.spawn(move || {
                let staged = HostStaged::new(Box::new(c), b.stream().clone());
                let mut acc = b.upload(&[i32::MAX, -5, r as i32]).unwrap();
                staged.all_reduce_sum_i32_device(&mut acc).unwrap();
                let mut out = [0i32; 3];
                b.download(&acc, &mut out).unwrap();
                assert_eq!(out, [i32::MAX.wrapping_add(i32::MAX), -10, 1]);
                let mut m = b.upload(&[r as f32, -1.0]).unwrap();
                staged.all_reduce_max_f32_device(&mut m).unwrap();
                let mut out = [0f32; 2];
                b.download(&m, &mut out).unwrap();
                assert_eq!(out, [1.0, -1.0]);
            });
        }
    });
    println!("collective_cuda: host-staged: 1 case");
}

#[cfg(feature = "nccl")]
#[test]
fn nccl_single_rank_and_join_deadline() {
    use bitnet_worker::collective::{Collective, CollectiveError, NcclCollective};
    use std::time::Duration;
    let Some(b) = backend() else { return };
    let id = NcclCollective::unique_id().expect("libnccl on the GPU machine");
    let one = NcclCollective::join(b.stream().clone(), 0, 1, &id, Duration::from_secs(30))
        .expect("a group of one joins");
    let mut acc = b.upload(&[3i32, -4]).unwrap();
    one.all_reduce_sum_i32_device(&mut acc).unwrap();
    let mut host = [7i32, 8];
    one.all_reduce_sum_i32(&mut host).unwrap();
    assert_eq!(host, [7, 8]);
    // Rank 0 of two, alone: the join must fail at its deadline instead of hanging.
    let id = NcclCollective::unique_id().unwrap();
    let started = std::time::Instant::now();
    let err = NcclCollective::join(b.stream().clone(), 0, 2, &id, Duration::from_secs(2))
        .err()
        .expect("a lone rank cannot join a group of two");
    assert!(matches!(err, CollectiveError::Stuck { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    println!("collective_cuda: nccl: 2 cases ({err})");
}
