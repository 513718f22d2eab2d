//! The device-resident forward pass of [`CudaModel`]: embedding → every layer → final norm →
//! LM head of the wanted rows, with every activation, the KV pool and the logits on the GPU.
//! Per pass only the [`BatchPlan`]'s arrays go up (token ids, positions, table offsets, block
//! tables, KV slots, wanted rows). A layer is `crate::ShardedModel`'s: `h += o(attn_sub_norm(
//! Attn(input_norm(h))))`, `h += down(ffn_sub_norm(act(gate(x)) · up(x)))`, `x =
//! post_attention_norm(h)`, with the new keys and values stored through each token's slot and
//! paged attention reading every sequence's history through its block table in place.

use super::kv::DeviceKv;
use super::model::CudaModel;
use super::plan::BatchPlan;
use super::weights::DeviceLayer;
use crate::error::WorkerError;
use crate::model::QuantTrace;
use bitnet_checkpoints::Activation;
use bitnet_kernels::cuda::{Heads, PagedTokens};
use cudarc::driver::CudaSlice;

/// What one pass leaves: the wanted rows' logits on the device (`rows × vocab`, `None` when no
/// row was wanted) and layer 0's q-projection activations when traced.
pub(crate) struct Pass {
    pub logits: Option<CudaSlice<f32>>,
    pub trace: Option<QuantTrace>,
}

/// The per-pass device arrays every layer reads.
struct Step<'a> {
    n: usize,
    tokens: PagedTokens<'a>,
    slots: &'a CudaSlice<u32>,
}

impl CudaModel {
    /// Runs `plan` over `kv`; the logits of rows `wanted` (in that order) stay on the device.
    pub(crate) fn forward(
        &self,
        kv: &mut DeviceKv,
        plan: &BatchPlan,
        wanted: &[u32],
        trace: bool,
    ) -> Result<Pass, WorkerError> {
        if plan.is_empty() {
            return Ok(Pass {
                logits: None,
                trace: None,
            });
        }
        let (b, n) = (&self.backend, plan.len());
        let hidden = self.config.hidden_size;
        let ops = b.ops();
        let ids = b.upload(&plan.tokens)?;
        let positions = b.upload(&plan.positions)?;
        let table_start = b.upload(&plan.table_start)?;
        let tables = b.upload(&plan.tables)?;
        let slots = b.upload(&plan.slots)?;
        let step = Step {
            n,
            tokens: PagedTokens {
                positions: &positions,
                table_start: &table_start,
                tables: &tables,
                block_size: plan.block_size,
            },
            slots: &slots,
        };
        let mut h = self.buf::<f32>(n * hidden)?;
        ops.embedding(&self.embedding, &ids, &mut h)?;
        let mut first_q = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let t = self.layer(i, layer, &mut h, &step, kv, trace && i == 0)?;
            if i == 0 {
                first_q = t;
            }
        }
        if wanted.is_empty() {
            b.synchronize()?;
            return Ok(Pass {
                logits: None,
                trace: first_q,
            });
        }
        if let Some(&row) = wanted.iter().find(|&&r| r as usize >= n) {
            return Err(WorkerError::KvLayout(format!(
                "logits of row {row} wanted from a batch of {n}"
            )));
        }
        let m = wanted.len();
        let idx = b.upload(wanted)?;
        let mut selected = self.buf::<f32>(m * hidden)?;
        ops.gather_rows(&h, &idx, hidden, &mut selected)?;
        let normed = self.norm(&self.final_norm, &selected, m, hidden)?;
        let head = self.head.as_ref().unwrap_or(&self.embedding);
        let mut logits = self.buf::<f32>(m * head.rows)?;
        b.dense_matmul_device(head, &normed, m, &mut logits)?;
        Ok(Pass {
            logits: Some(logits),
            trace: first_q,
        })
    }

    /// One decoder layer over `h` in place; returns layer 0's q-projection trace when asked.
    fn layer(
        &self,
        index: usize,
        l: &DeviceLayer,
        h: &mut CudaSlice<f32>,
        step: &Step<'_>,
        kv: &mut DeviceKv,
        trace: bool,
    ) -> Result<Option<QuantTrace>, WorkerError> {
        let c = &self.config;
        let (hidden, hd, n) = (c.hidden_size, c.head_dim, step.n);
        let (hq, hkv) = (self.layout.local_heads(), self.layout.local_kv_heads());
        let ops = self.backend.ops();
        let g = &self.gathers;

        let mut tr = trace.then(QuantTrace::default);
        let normed = l
            .input_norm
            .as_ref()
            .map(|norm| self.norm(norm, h, n, hidden))
            .transpose()?;
        let (mut q, mut k, v) = {
            let x = normed.as_ref().unwrap_or(h);
            (
                self.column_parallel(&l.q, x, n, &g.q, tr.as_mut())?,
                self.column_parallel(&l.k, x, n, &g.kv, None)?,
                self.column_parallel(&l.v, x, n, &g.kv, None)?,
            )
        };
        drop(normed);
        ops.rope(&mut q, step.tokens.positions, &self.inv_freq, hq, hd)?;
        ops.rope(&mut k, step.tokens.positions, &self.inv_freq, hkv, hd)?;
        let (keys, values) = match (kv.keys.get_mut(index), kv.values.get_mut(index)) {
            (Some(k), Some(v)) => (k, v),
            _ => {
                return Err(WorkerError::KvLayout(format!(
                    "the pool has no layer {index}"
                )))
            }
        };
        ops.kv_store(keys, values, &k, &v, step.slots, hkv * hd)?;
        let mut attn = self.buf::<f32>(n * hq * hd)?;
        let heads = Heads {
            q: hq,
            kv: hkv,
            dim: hd,
        };
        ops.paged_attention(heads, &q, keys, values, &step.tokens, &mut attn)?;
        drop((q, k, v));
        let o = self.row_parallel(&l.o, l.attn_sub_norm.as_ref(), &attn, n, &g.q)?;
        ops.add_assign(h, &o)?;

        let x = self.norm(&l.post_attention_norm, h, n, hidden)?;
        let gate = self.column_parallel(&l.gate, &x, n, &g.ffn, None)?;
        let up = self.column_parallel(&l.up, &x, n, &g.ffn, None)?;
        let mut act = self.buf::<f32>(gate.len())?;
        let name = match c.activation {
            Activation::Silu => "silu_mul",
            Activation::Relu2 => "relu2_mul",
        };
        ops.gate(name, &gate, &up, &mut act)?;
        let down = self.row_parallel(&l.down, l.ffn_sub_norm.as_ref(), &act, n, &g.ffn)?;
        ops.add_assign(h, &down)?;
        Ok(tr.filter(|t| !t.scales.is_empty()))
    }
}
