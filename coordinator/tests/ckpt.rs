//! `ckpt compress` round trips through the library: every fixture family (latent, packed,
//! dense, OneBit, its pickle) → native / hf-packed / bitblas and `--tp 1, 2, 4` → load gives
//! the very weights and bit-identical logits of loading the source.

use bitnet_checkpoints::export::OutputFormat;
use bitnet_checkpoints::{load_model, Family, ModelWeights};
use bitnet_coordinator::ckpt::{compress, CompressOptions, LmHeadArg, Progress};
use bitnet_kernels::{CpuBackend, DenseData};
use bitnet_worker::shard::{load_presharded, ShardError};
use bitnet_worker::{
    GenerationRequest, Generator, LocalGroup, Model, SamplingParams, ShardPlan, ShardedGenerator,
    ShardedModel,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PROMPT: [u32; 5] = [1, 5, 9, 20, 7];

fn fixtures() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("model/config.json").is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("model"),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 9, "fixtures found: {out:?}");
    out
}

fn options(
    input: &Path,
    output: &Path,
    format: OutputFormat,
    tp: Option<usize>,
) -> CompressOptions {
    CompressOptions {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        format,
        tp,
        lm_head: LmHeadArg::Keep,
    }
}

fn request() -> GenerationRequest {
    GenerationRequest {
        prompt_ids: PROMPT.to_vec(),
        max_new_tokens: 3,
        sampling: SamplingParams::default(),
        stop_ids: vec![],
        keep_prompt_logits: true,
        logprobs: None,
    }
}

fn logits(weights: &ModelWeights) -> Vec<u32> {
    let model = Model::new(weights.clone(), CpuBackend::new(1));
    let g = Generator::new(&model).run(&request()).unwrap();
    g.prompt_logits
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn is_ternary(f: Family) -> bool {
    matches!(f, Family::OneBitLlm | Family::BitNet | Family::LlamaBitNet)
}

#[test]
fn native_round_trip_gives_the_same_weights_and_logits_for_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, src) in fixtures() {
        let out = tmp.path().join(&name);
        let s = compress(
            &options(&src, &out, OutputFormat::Native, None),
            &mut Progress::Silent,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            s.output_bytes > 0 && s.files.contains_key("model.safetensors"),
            "{name}"
        );
        let a = load_model(&src).unwrap();
        let b = load_model(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(a == b, "{name}: the native copy loads other weights");
        assert_eq!(logits(&a), logits(&b), "{name}: logits differ");
        bitnet_checkpoints::verify(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: native ok ({} bytes)", s.output_bytes);
    }
}

#[test]
fn hf_packed_and_bitblas_round_trips_give_bit_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for (name, src) in fixtures() {
        let a = load_model(&src).unwrap();
        let base = logits(&a);
        for format in [OutputFormat::HfPacked, OutputFormat::BitBlas] {
            let out = tmp.path().join(format!("{name}-{}", format.name()));
            let result = compress(&options(&src, &out, format, None), &mut Progress::Silent);
            let use_rms_norm = a
                .config
                .quantization
                .as_ref()
                .is_some_and(|q| q.use_rms_norm);
            let supported = matches!(a.config.family, Family::OneBitLlm | Family::BitNet)
                && !(format == OutputFormat::BitBlas && use_rms_norm);
            if !supported {
                let err = result.expect_err(&name).to_string();
                assert!(err.contains("use --format native"), "{name}: {err}");
                assert!(!out.exists(), "{name}: nothing is written when refused");
                continue;
            }
            result.unwrap_or_else(|e| panic!("{name} {}: {e}", format.name()));
            let b = load_model(&out).unwrap_or_else(|e| panic!("{name} {}: {e}", format.name()));
            assert_eq!(b.layers, a.layers, "{name} {}: layers", format.name());
            assert_eq!(logits(&b), base, "{name} {}: logits", format.name());
            let report = bitnet_checkpoints::inspect(&out).unwrap();
            let expected = match format {
                OutputFormat::HfPacked => "hf-packed (uint8 [out/4, in], autobitlinear)",
                _ => "bitblas (fused qkv / gate_up, unpermuted)",
            };
            assert_eq!(report.format, expected, "{name}");
            cases += 1;
        }
    }
    assert!(cases >= 9, "only {cases} hf-packed/bitblas cases ran");
}

#[test]
fn tensor_parallel_outputs_hold_each_ranks_shard_and_give_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for (name, src) in fixtures() {
        let weights = Arc::new(load_model(&src).unwrap());
        let base = logits(&weights);
        for tp in [1usize, 2, 4] {
            let out = tmp.path().join(format!("{name}-tp{tp}"));
            let result = compress(
                &options(&src, &out, OutputFormat::Native, Some(tp)),
                &mut Progress::Silent,
            );
            match ShardPlan::new(0, tp).and_then(|p| p.layout(&weights.config)) {
                Err(
                    e @ (ShardError::HeadsNotDivisible { .. }
                    | ShardError::KvHeadsNotDivisible { .. }),
                ) => {
                    let err = result.expect_err(&name).to_string();
                    assert!(err.contains(&e.to_string()), "{name} tp {tp}: {err}");
                    println!("{name}: skip TP={tp}: {e}");
                    continue;
                }
                Err(e) => panic!("{name}: {e}"),
                Ok(_) => {}
            }
            result.unwrap_or_else(|e| panic!("{name} tp {tp}: {e}"));
            bitnet_checkpoints::verify(&out).unwrap_or_else(|e| panic!("{name} tp {tp}: {e}"));
            let err = load_model(&out).unwrap_err().to_string();
            assert!(
                err.contains(&format!("serve it with `up --tp {tp}`")),
                "{err}"
            );
            let shards: Vec<_> = (0..tp)
                .map(|rank| {
                    let plan = ShardPlan::new(rank, tp).unwrap();
                    let loaded = load_presharded(&out, plan).unwrap();
                    assert!(
                        loaded == plan.shard(&weights).unwrap(),
                        "{name} tp {tp} rank {rank}: the file holds another shard"
                    );
                    loaded
                })
                .collect();
            let wrong = load_presharded(&out, ShardPlan::new(0, tp * 2).unwrap()).unwrap_err();
            assert!(
                wrong.to_string().contains(&format!(
                    "pre-sharded for --tp {tp} but --tp {} was asked",
                    tp * 2
                )),
                "{wrong}"
            );
            if is_ternary(weights.config.family) {
                let handles: Vec<_> = shards
                    .into_iter()
                    .zip(LocalGroup::ranks(tp))
                    .map(|(shard, c)| {
                        std::thread::spawn(move || {
                            let m =
                                ShardedModel::new(shard, CpuBackend::new(1), Box::new(c)).unwrap();
                            let g = ShardedGenerator::new(&m).run(&request()).unwrap();
                            g.prompt_logits
                                .unwrap()
                                .iter()
                                .map(|v| v.to_bits())
                                .collect::<Vec<u32>>()
                        })
                    })
                    .collect();
                for (rank, h) in handles.into_iter().enumerate() {
                    assert_eq!(
                        h.join().unwrap(),
                        base,
                        "{name} tp {tp} rank {rank}: logits"
                    );
                }
            }
            cases += 1;
        }
    }
    assert!(cases >= 20, "only {cases} TP cases ran");
}

#[test]
fn auto_lm_head_stores_an_f32_embedding_as_f16_and_int8_matches_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures()
        .into_iter()
        .find(|(n, _)| n == "1bitllm")
        .unwrap()
        .1;
    let a = load_model(&src).unwrap();
    assert!(
        matches!(a.embedding.data(), DenseData::F32(_)),
        "the fixture is f32"
    );
    let mut opts = options(&src, &tmp.path().join("auto"), OutputFormat::Native, None);
    opts.lm_head = LmHeadArg::Auto;
    compress(&opts, &mut Progress::Silent).unwrap();
    let b = load_model(&opts.output).unwrap();
    assert!(
        matches!(b.embedding.data(), DenseData::F16(_)),
        "auto: f32 → f16"
    );
    assert_eq!(b.layers, a.layers, "ternary weights and β are untouched");
    opts.lm_head = LmHeadArg::Int8;
    opts.output = tmp.path().join("int8");
    compress(&opts, &mut Progress::Silent).unwrap();
    let c = load_model(&opts.output).unwrap();
    assert_eq!(
        c.lm_head,
        Some(a.lm_head().to_int8()),
        "as `generate --lm-head int8`"
    );
}
