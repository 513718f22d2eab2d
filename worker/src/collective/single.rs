//! [`SingleRank`]: the group of one (TP = 1). Every operation returns its input unchanged.

use super::{Collective, CollectiveError, Op};

/// A tensor-parallel group with a single rank.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleRank;

impl Collective for SingleRank {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn exchange(&self, _op: Op, data: Vec<u8>) -> Result<Vec<Vec<u8>>, CollectiveError> {
        Ok(vec![data])
    }
}
