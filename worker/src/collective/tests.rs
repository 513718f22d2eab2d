//! Every collective operation on every implementation against a serial computation, plus the
//! failure modes: a dropped or silent peer makes the others fail within the deadline.

use super::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Runs `f` on every rank in its own thread and returns the results in rank order.
fn on_every_rank<C: Collective + 'static, T: Send + 'static>(
    ranks: Vec<C>,
    f: impl Fn(&C) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let handles: Vec<_> = ranks
        .into_iter()
        .map(|c| std::thread::spawn(move || f(&c)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread panicked"))
        .collect()
}

/// Rank `r`'s contribution: awkward length, values that depend on rank and index.
fn ints(rank: usize) -> Vec<i32> {
    (0..37i32)
        .map(|i| (i - 18) * (rank as i32 + 3) + rank as i32 * 1000)
        .collect()
}

fn floats(rank: usize) -> Vec<f32> {
    (0..37)
        .map(|i| ((i * 7 + rank * 13) % 23) as f32 * 0.37 - 3.1 + rank as f32 * 0.011)
        .collect()
}

/// What every rank reports: the results of all operations, in a fixed order.
#[derive(Debug, PartialEq)]
struct Outcome {
    sum_i32: Vec<i32>,
    sum_f32: Vec<f32>,
    max_f32: Vec<f32>,
    gathered: Vec<Vec<f32>>,
    broadcast: Vec<u32>,
}

fn every_op<C: Collective>(c: &C) -> Result<Outcome, CollectiveError> {
    let r = c.rank();
    let mut sum_i32 = ints(r);
    c.all_reduce_sum_i32(&mut sum_i32)?;
    let mut sum_f32 = floats(r);
    c.all_reduce_sum_f32(&mut sum_f32)?;
    let mut max_f32 = floats(r);
    c.all_reduce_max_f32(&mut max_f32)?;
    // Uneven lengths: rank r contributes r + 1 values.
    let gathered = c.all_gather_f32(&floats(r)[..r + 1])?;
    let root = c.world_size() - 1;
    let mut broadcast = vec![r as u32; 5];
    if r == root {
        broadcast = vec![11, 22, 33, 44, 55];
    }
    c.broadcast_u32(&mut broadcast, root)?;
    c.barrier()?;
    Ok(Outcome {
        sum_i32,
        sum_f32,
        max_f32,
        gathered,
        broadcast,
    })
}

fn serial(world: usize) -> Outcome {
    let mut sum_i32 = vec![0i32; 37];
    let mut sum_f32 = vec![0.0f32; 37];
    let mut max_f32 = vec![f32::NEG_INFINITY; 37];
    for r in 0..world {
        for i in 0..37 {
            sum_i32[i] += ints(r)[i];
            sum_f32[i] += floats(r)[i];
            max_f32[i] = max_f32[i].max(floats(r)[i]);
        }
    }
    Outcome {
        sum_i32,
        sum_f32,
        max_f32,
        gathered: (0..world).map(|r| floats(r)[..r + 1].to_vec()).collect(),
        broadcast: vec![11, 22, 33, 44, 55],
    }
}

fn check_all(world: usize, name: &str, results: Vec<Result<Outcome, CollectiveError>>) {
    let expected = serial(world);
    for (rank, got) in results.into_iter().enumerate() {
        let got = got.unwrap_or_else(|e| panic!("{name} world {world} rank {rank}: {e}"));
        assert_eq!(got, expected, "{name} world {world} rank {rank}");
    }
}

#[test]
fn single_rank_is_identity() {
    let got = every_op(&SingleRank).expect("single rank");
    let mut expected = serial(1);
    expected.broadcast = vec![11, 22, 33, 44, 55];
    assert_eq!(got, expected);
}

#[test]
fn local_group_matches_serial_for_1_to_4_ranks() {
    for world in 1..=4 {
        let results = on_every_rank(LocalGroup::ranks(world), every_op);
        check_all(world, "local", results);
    }
}

/// A connected TCP ring of `world` ranks on 127.0.0.1 ephemeral ports.
fn tcp_ring(world: usize, timeout: Duration) -> Vec<TcpRing> {
    let listeners: Vec<TcpListener> = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().expect("address"))
        .collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, listener)| {
            let mut config = TcpRingConfig::new(rank, addresses.clone());
            config.timeout = timeout;
            config.connect_timeout = Duration::from_secs(10);
            std::thread::spawn(move || TcpRing::with_listener(listener, config))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("ring connects"))
        .collect()
}

#[test]
fn tcp_ring_matches_serial_for_1_to_3_ranks() {
    for world in 1..=3 {
        let results = on_every_rank(tcp_ring(world, Duration::from_secs(10)), every_op);
        check_all(world, "tcp", results);
    }
}

#[test]
fn tcp_ring_moves_large_buffers_without_deadlock() {
    let results = on_every_rank(tcp_ring(3, Duration::from_secs(20)), |c| {
        let mut buf: Vec<i32> = (0..1_000_000).map(|i| i + c.rank() as i32).collect();
        c.all_reduce_sum_i32(&mut buf).map(|_| buf[999_999])
    });
    for r in results {
        assert_eq!(r.expect("large all-reduce"), 3 * 999_999 + 3);
    }
}

/// Ranks 0..n-1 run an all-reduce while the last rank stays silent (alive, never calling):
/// every other rank must fail (a timeout, or the disconnect of a neighbour that timed out)
/// before twice `timeout`.
fn silent_peer<C: Collective + 'static>(ranks: Vec<C>, timeout: Duration) {
    let last = ranks.len() - 1;
    let results = on_every_rank(ranks, move |c| {
        if c.rank() == last {
            std::thread::sleep(timeout * 3);
            return None;
        }
        let start = Instant::now();
        let result = c.all_reduce_sum_i32(&mut [1; 8]);
        Some((result, start.elapsed()))
    });
    for (rank, r) in results.into_iter().enumerate().take(last) {
        let (result, waited) = r.expect("a result");
        let err = result.expect_err("silent peer");
        assert!(
            matches!(
                err,
                CollectiveError::Timeout { .. } | CollectiveError::Disconnected { .. }
            ),
            "rank {rank}: {err}"
        );
        assert!(waited < timeout * 2, "rank {rank} waited {waited:?}");
    }
}

#[test]
fn local_group_dropped_peer_fails_fast() {
    let start = Instant::now();
    let mut ranks = LocalGroup::ranks_with_timeout(3, Duration::from_secs(5));
    drop(ranks.pop());
    let results = on_every_rank(ranks, |c| c.all_reduce_sum_i32(&mut [1, 2]));
    for r in results {
        let err = r.expect_err("dropped peer");
        assert!(matches!(err, CollectiveError::Disconnected { .. }), "{err}");
    }
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn local_group_silent_peer_times_out() {
    let timeout = Duration::from_millis(300);
    silent_peer(LocalGroup::ranks_with_timeout(3, timeout), timeout);
}

#[test]
fn tcp_ring_dropped_peer_fails_within_deadline() {
    let timeout = Duration::from_secs(2);
    let mut ranks = tcp_ring(3, timeout);
    drop(ranks.pop());
    let start = Instant::now();
    let results = on_every_rank(ranks, |c| c.all_reduce_sum_i32(&mut [1, 2]));
    for (rank, r) in results.into_iter().enumerate() {
        assert!(r.is_err(), "rank {rank} should fail");
    }
    assert!(start.elapsed() < timeout * 2, "took {:?}", start.elapsed());
}

#[test]
fn tcp_ring_silent_peer_times_out() {
    let timeout = Duration::from_millis(500);
    silent_peer(tcp_ring(3, timeout), timeout);
}

#[test]
fn mismatched_operations_are_protocol_errors() {
    let results = on_every_rank(LocalGroup::ranks(2), |c| {
        if c.rank() == 0 {
            c.barrier()
        } else {
            c.all_reduce_sum_i32(&mut [1])
        }
    });
    assert!(results.iter().all(Result::is_err));
    let results = on_every_rank(tcp_ring(2, Duration::from_secs(5)), |c| {
        if c.rank() == 0 {
            c.barrier()
        } else {
            c.all_reduce_sum_i32(&mut [1])
        }
    });
    assert!(results.iter().all(Result::is_err));
}

#[test]
fn different_lengths_are_rejected() {
    let results = on_every_rank(LocalGroup::ranks(2), |c| {
        let mut buf = vec![0.5f32; 3 + c.rank()];
        c.all_reduce_sum_f32(&mut buf)
    });
    for r in results {
        assert!(matches!(r, Err(CollectiveError::LengthMismatch { .. })));
    }
}

#[test]
fn tcp_ring_small_exchange_latency_is_printed() {
    let rounds = 300;
    let results = on_every_rank(tcp_ring(2, Duration::from_secs(10)), move |c| {
        let start = Instant::now();
        for _ in 0..rounds {
            c.all_reduce_sum_i32(&mut [1; 2560])?;
        }
        Ok::<_, CollectiveError>(start.elapsed() / rounds)
    });
    for (rank, r) in results.into_iter().enumerate() {
        let per_op = r.expect("all-reduces");
        println!("tcp ring, 2 ranks: rank {rank} all_reduce_sum_i32 of 2560 values: {per_op:?}");
        assert!(
            per_op < Duration::from_millis(20),
            "{per_op:?} per operation"
        );
    }
}
