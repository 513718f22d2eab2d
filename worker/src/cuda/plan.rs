//! [`BatchPlan`]: what the device forward uploads for one batch of [`PagedChunk`]s — every
//! token id, its position in its own sequence, the offset of its sequence's block table in one
//! flat table array, and the pool row (slot) its key and value go to — built on the host and
//! checked before any device work: chunks not empty, ids inside the vocabulary, every table
//! holding its sequence's history inside the pool, rows addressable as u32. Pure host code, so
//! its checks are tested without a GPU.

use crate::error::WorkerError;
use crate::kv_pool::KvPool;
use crate::model::PagedChunk;

/// The device-side description of one batch (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// Every token of the batch, sequence after sequence.
    pub tokens: Vec<u32>,
    /// Each token's position in its sequence (it attends to keys `0 ..= position`).
    pub positions: Vec<u32>,
    /// Each token's offset of its sequence's block table in [`BatchPlan::tables`].
    pub table_start: Vec<u32>,
    /// The used part of every sequence's block table, concatenated.
    pub tables: Vec<u32>,
    /// Each token's pool row (`block · block_size + position % block_size`).
    pub slots: Vec<u32>,
    /// Each sequence's rows of the batch (`start .. end`).
    pub seqs: Vec<(usize, usize)>,
    /// Tokens per KV block.
    pub block_size: usize,
}

fn layout(what: String) -> WorkerError {
    WorkerError::KvLayout(what)
}

impl BatchPlan {
    /// Checks `batch` against `pool` and `vocab` and lays it out (see the module docs).
    pub fn new(batch: &[PagedChunk<'_>], pool: &KvPool, vocab: usize) -> Result<Self, WorkerError> {
        let bs = pool.block_size();
        let pool_rows = pool
            .num_blocks()
            .checked_mul(bs)
            .filter(|&r| r <= u32::MAX as usize)
            .ok_or_else(|| layout(format!("{} blocks do not fit u32 rows", pool.num_blocks())))?;
        let mut plan = BatchPlan {
            block_size: bs,
            ..Self::default()
        };
        for chunk in batch {
            if chunk.tokens.is_empty() {
                return Err(WorkerError::EmptyPrompt);
            }
            if let Some(&id) = chunk.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(WorkerError::TokenOutOfRange { id, vocab });
            }
            let end = chunk
                .num_computed
                .checked_add(chunk.tokens.len())
                .ok_or_else(|| layout("token count overflows".into()))?;
            pool.check_table(chunk.block_table, end)?;
            let used = &chunk.block_table[..end.div_ceil(bs)];
            let table_start = u32::try_from(plan.tables.len())
                .map_err(|_| layout("the batch's block tables overflow u32".into()))?;
            plan.tables.extend_from_slice(used);
            let first = plan.tokens.len();
            for (j, &token) in chunk.tokens.iter().enumerate() {
                let pos = chunk.num_computed + j;
                let slot = used[pos / bs] as usize * bs + pos % bs;
                debug_assert!(slot < pool_rows);
                plan.tokens.push(token);
                plan.positions.push(pos as u32); // pos < end ≤ pool rows ≤ u32::MAX
                plan.table_start.push(table_start);
                plan.slots.push(slot as u32);
            }
            plan.seqs.push((first, plan.tokens.len()));
        }
        Ok(plan)
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The rows whose logits are wanted: every row, or the last row of each sequence.
    pub fn wanted_rows(&self, all: bool) -> Vec<u32> {
        if all {
            (0..self.len() as u32).collect()
        } else {
            self.seqs.iter().map(|&(_, end)| end as u32 - 1).collect()
        }
    }

    /// The last row of sequence `seq` of the batch.
    pub fn last_row(&self, seq: usize) -> Result<u32, WorkerError> {
        self.seqs
            .get(seq)
            .map(|&(_, end)| end as u32 - 1)
            .ok_or_else(|| {
                layout(format!(
                    "no sequence {seq} in a batch of {}",
                    self.seqs.len()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(blocks: usize) -> KvPool {
        KvPool::on_device(2, 8, 16, blocks, Box::new(())).unwrap()
    }

    #[test]
    fn tokens_land_in_their_tables_rows() {
        let pool = pool(6);
        let a = [1u32, 2, 3];
        let b = [9u32];
        let batch = [
            PagedChunk {
                tokens: &a,
                block_table: &[4, 1],
                num_computed: 15,
            },
            PagedChunk {
                tokens: &b,
                block_table: &[2, 0, 5],
                num_computed: 0,
            },
        ];
        let plan = BatchPlan::new(&batch, &pool, 10).unwrap();
        assert_eq!(plan.tokens, vec![1, 2, 3, 9]);
        assert_eq!(plan.positions, vec![15, 16, 17, 0]);
        assert_eq!(plan.tables, vec![4, 1, 2]);
        assert_eq!(plan.table_start, vec![0, 0, 0, 2]);
        assert_eq!(plan.slots, vec![4 * 16 + 15, 16, 17, 2 * 16]);
        assert_eq!(plan.seqs, vec![(0, 3), (3, 4)]);
        assert_eq!(plan.wanted_rows(false), vec![2, 3]);
        assert_eq!(plan.wanted_rows(true), vec![0, 1, 2, 3]);
        assert_eq!(plan.last_row(1).unwrap(), 3);
        assert!(plan.last_row(2).is_err());
    }

    #[test]
    fn bad_batches_are_errors_before_any_device_work() {
        let pool = pool(2);
        let chunk = |tokens: &'static [u32], table: &'static [u32], past| PagedChunk {
            tokens,
            block_table: table,
            num_computed: past,
        };
        let err = |c: PagedChunk<'static>| BatchPlan::new(&[c], &pool, 100).unwrap_err();
        assert!(matches!(err(chunk(&[], &[0], 0)), WorkerError::EmptyPrompt));
        assert!(matches!(
            err(chunk(&[5, 100], &[0], 0)),
            WorkerError::TokenOutOfRange {
                id: 100,
                vocab: 100
            }
        ));
        // Too many tokens for the table (and the pool).
        assert!(matches!(
            err(chunk(&[1], &[0, 1], 32)),
            WorkerError::ContextFull { .. }
        ));
        // A block outside the pool.
        assert!(matches!(
            err(chunk(&[1], &[2], 0)),
            WorkerError::KvLayout(_)
        ));
        assert!(BatchPlan::new(&[], &pool, 100).unwrap().is_empty());
    }
}
