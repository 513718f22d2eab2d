//! [`LocalGroup`]: N ranks as threads of one process, connected by std channels (one channel per
//! ordered pair of ranks). The in-process [`Collective`] of tests: no socket, no second process.
//!
//! Each rank sends its buffer to every peer and then receives one message from each peer in
//! rank order; per-pair channels are FIFO and every rank issues the same operations in the same
//! order, so messages match up. A dropped [`LocalCollective`] closes its channels (its peers
//! see [`CollectiveError::Disconnected`]); a silent one makes them time out.

use super::{Collective, CollectiveError, Op, DEFAULT_TIMEOUT};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Message = (Op, Arc<Vec<u8>>);

/// Builds the ranks of an in-process group.
pub struct LocalGroup;

impl LocalGroup {
    /// `n` connected ranks (rank `i` at index `i`) with the default deadline.
    pub fn ranks(n: usize) -> Vec<LocalCollective> {
        Self::ranks_with_timeout(n, DEFAULT_TIMEOUT)
    }

    /// `n` connected ranks whose every operation fails after `timeout` without an answer.
    pub fn ranks_with_timeout(n: usize, timeout: Duration) -> Vec<LocalCollective> {
        let mut senders: Vec<Vec<Option<Sender<Message>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<Option<Receiver<Message>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for from in 0..n {
            for to in 0..n {
                if from != to {
                    let (tx, rx) = channel();
                    senders[from][to] = Some(tx);
                    receivers[to][from] = Some(rx);
                }
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (senders, receivers))| LocalCollective {
                rank,
                world: n,
                timeout,
                links: Mutex::new(Some(Links { senders, receivers })),
            })
            .collect()
    }
}

struct Links {
    senders: Vec<Option<Sender<Message>>>,
    receivers: Vec<Option<Receiver<Message>>>,
}

/// One rank of a [`LocalGroup`].
pub struct LocalCollective {
    rank: usize,
    world: usize,
    timeout: Duration,
    /// `None` once an operation failed: the channels are dropped so peers fail fast too.
    links: Mutex<Option<Links>>,
}

impl LocalCollective {
    fn run(&self, links: &Links, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let deadline = Instant::now() + self.timeout;
        let data = Arc::new(data);
        for (peer, tx) in links.senders.iter().enumerate() {
            if let Some(tx) = tx {
                tx.send((op, Arc::clone(&data)))
                    .map_err(|_| CollectiveError::Disconnected {
                        rank: self.rank,
                        peer,
                        op: op.name(),
                    })?;
            }
        }
        let mut out = Vec::with_capacity(self.world);
        for (peer, rx) in links.receivers.iter().enumerate() {
            let Some(rx) = rx else {
                out.push(data.to_vec());
                continue;
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            let (got_op, bytes) = rx.recv_timeout(wait).map_err(|e| match e {
                RecvTimeoutError::Timeout => CollectiveError::Timeout {
                    rank: self.rank,
                    peer,
                    op: op.name(),
                    timeout: self.timeout,
                },
                RecvTimeoutError::Disconnected => CollectiveError::Disconnected {
                    rank: self.rank,
                    peer,
                    op: op.name(),
                },
            })?;
            if got_op != op {
                return Err(CollectiveError::Protocol {
                    rank: self.rank,
                    peer,
                    op: op.name(),
                    got: format!("a message of {}", got_op.name()),
                });
            }
            out.push(bytes.to_vec());
        }
        Ok(out)
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn exchange(&self, op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let mut guard = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let Some(links) = guard.as_ref() else {
            return Err(CollectiveError::Broken {
                rank: self.rank,
                op: op.name(),
            });
        };
        let result = self.run(links, op, data);
        if result.is_err() {
            *guard = None;
        }
        result
    }
}
