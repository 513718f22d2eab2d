//! `inspect` reports family, tensors, logical parameters, bytes and ternary statistics.

mod common;

use bitnet_checkpoints::{inspect, Family};
use common::*;
use safetensors::Dtype;

#[test]
fn packed_bitnet_report_counts_logical_parameters_and_histograms() {
    let fx = Fixture::bitnet_packed(Some("autobitlinear"), 0.5);
    let dir = fx.tempdir();
    let r = inspect(dir.path()).unwrap();
    assert_eq!(r.family, Family::BitNet);
    assert_eq!(r.family_name, "bitnet");
    assert_eq!(r.tensors.len(), fx.tensors.len());
    let q = r
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(
        (q.dtype.as_str(), q.shape.as_slice()),
        ("U8", &[4, HIDDEN][..])
    );
    assert_eq!(q.parameters, (HEADS * HEAD_DIM * HIDDEN) as u64);
    let proj: usize = projections().iter().map(|(_, o, i)| o * i + 1).sum();
    let norms = 2 * HIDDEN + HEADS * HEAD_DIM + INTER;
    let expected = VOCAB * HIDDEN + HIDDEN + LAYERS * (proj + norms);
    assert_eq!(r.parameters, expected as u64);
    let file_len = std::fs::metadata(dir.path().join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(r.bytes_on_disk, file_len);
    assert_eq!(r.bitlinear.len(), LAYERS * 7);
    let up = &r.bitlinear[5];
    assert_eq!(up.name, "model.layers.0.mlp.up_proj");
    let t = ternary("model.layers.0.mlp.up_proj", INTER * HIDDEN);
    let count = |v: i8| t.iter().filter(|&&x| x == v).count() as u64;
    assert_eq!(
        (up.minus, up.zero, up.plus),
        (count(-1), count(0), count(1))
    );
    assert_eq!((up.rows, up.cols, up.beta), (INTER, HIDDEN, 0.5));

    let text = r.to_string();
    assert!(text.contains("family        bitnet"), "{text}");
    assert!(
        text.contains("model.layers.1.mlp.down_proj.weight"),
        "{text}"
    );
    assert!(text.contains("bitlinear (14)"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["family_name"], "bitnet");
    assert_eq!(json["config"]["hidden_size"], HIDDEN);
    assert_eq!(json["bitlinear"][5]["minus"], count(-1));
}

#[test]
fn onebit_and_dense_reports() {
    let fx = Fixture::onebit();
    let dir = fx.tempdir();
    let r = inspect(dir.path()).unwrap();
    let gate = r
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.1.mlp.gate_proj.weight")
        .unwrap();
    assert_eq!(gate.shape, vec![INTER, HIDDEN / 8]);
    assert_eq!(gate.parameters, (INTER * HIDDEN) as u64);
    assert!(r.bitlinear.is_empty());

    let fx = Fixture::llama(Dtype::F16);
    let dir = fx.tempdir();
    let r = inspect(dir.path()).unwrap();
    let stored: usize = fx
        .tensors
        .values()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    assert_eq!(r.parameters, stored as u64);
    // Matrices stay f16 (2 bytes); norm gains are held as f32 (4 bytes).
    let norms = LAYERS * 2 * HIDDEN + HIDDEN;
    assert_eq!(r.bytes_in_memory, ((stored - norms) * 2 + norms * 4) as u64);
    assert!(r.bitlinear.is_empty());
}

#[test]
fn one_bit_llm_report_skips_inv_freq_parameters() {
    let fx = Fixture::one_bit_llm();
    let dir = fx.tempdir();
    let r = inspect(dir.path()).unwrap();
    let inv = r
        .tensors
        .iter()
        .find(|t| t.name.ends_with("rotary_emb.inv_freq"))
        .unwrap();
    assert_eq!(inv.parameters, 0);
    let stored: usize = fx
        .tensors
        .iter()
        .filter(|(n, _)| !n.ends_with("inv_freq"))
        .map(|(_, s)| s.shape.iter().product::<usize>())
        .sum();
    assert_eq!(r.parameters, stored as u64);
    assert_eq!(r.bitlinear.len(), 14);
    assert!(r
        .bitlinear
        .iter()
        .all(|b| b.beta > 0.0 && b.minus + b.zero + b.plus == (b.rows * b.cols) as u64));
}
