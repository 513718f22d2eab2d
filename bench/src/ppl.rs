//! `bitnet-bench ppl --model DIR --text FILE [--seqlen 2048]`: perplexity of a checkpoint on a
//! text file, with the document packing of the 1bitLLM `eval_ppl.py`: every non-empty line is a
//! text, tokenized without special tokens and followed by EOS; texts are packed in order into
//! documents that start with BOS and hold at most `seqlen` tokens (a text that alone exceeds
//! `seqlen` is skipped, as there). Each document is one forward pass from an empty cache; the
//! perplexity is `exp(Σ NLL / Σ predicted tokens)` over every next-token prediction inside the
//! documents (log-softmax in f64).

use crate::meta::RunMeta;
use anyhow::{bail, Context, Result};
use bitnet_coordinator::tokenizer::TextTokenizer;
use bitnet_kernels::CpuBackend;
use bitnet_worker::{ForwardOptions, Model};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PplOptions {
    pub model: PathBuf,
    pub text: PathBuf,
    pub seqlen: usize,
    pub threads: usize,
    /// Evaluate at most this many documents.
    pub max_docs: Option<usize>,
    pub json: Option<PathBuf>,
}

/// The result. Field names are relied on by `bitnet-bench report`.
#[derive(Clone, Debug, Serialize)]
pub struct PplReport {
    pub kind: &'static str,
    pub meta: RunMeta,
    pub model: String,
    pub text: String,
    pub seqlen: usize,
    pub texts: usize,
    /// Texts longer than `seqlen` on their own, left out.
    pub skipped_texts: usize,
    pub documents: usize,
    pub predicted_tokens: u64,
    pub mean_nll: f64,
    pub perplexity: f64,
    pub tokens_per_s: f64,
}

/// Packs tokenized texts (each already followed by EOS) into documents starting with `bos` of
/// at most `seqlen` tokens, exactly as `eval_ppl.py` does (a text of exactly `seqlen` tokens
/// is kept and yields a document of `seqlen + 1`); returns the documents and the number of
/// texts skipped for being longer than `seqlen`.
pub fn pack(texts: &[Vec<u32>], bos: u32, seqlen: usize) -> (Vec<Vec<u32>>, usize) {
    let (mut docs, mut skipped) = (Vec::new(), 0);
    let mut doc = vec![bos];
    for t in texts {
        if t.len() > seqlen {
            skipped += 1;
            continue;
        }
        if doc.len() + t.len() > seqlen {
            docs.push(std::mem::replace(&mut doc, vec![bos]));
        }
        doc.extend_from_slice(t);
    }
    if doc.len() > 1 && doc.len() <= seqlen {
        docs.push(doc);
    }
    (docs, skipped)
}

/// `−log softmax(logits)[target]`, in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// Evaluates the model on the text; prints a summary and writes JSON when asked.
pub fn run(opts: &PplOptions) -> Result<PplReport> {
    if opts.seqlen < 2 {
        bail!("--seqlen must be at least 2");
    }
    let tokenizer = TextTokenizer::from_dir(&opts.model)?.with_context(|| {
        format!(
            "{}: no tokenizer.json (ppl needs the model's tokenizer)",
            opts.model.display()
        )
    })?;
    let text = std::fs::read_to_string(&opts.text)
        .with_context(|| format!("reading {}", opts.text.display()))?;
    let weights = bitnet_checkpoints::load_model(&opts.model)?;
    let config = weights.config.clone();
    let bos = config
        .bos_token_id
        .context("the model's config.json has no bos_token_id")?;
    let eos = *config
        .eos_token_ids
        .first()
        .context("the model's config.json has no eos_token_id")?;
    let mut texts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut ids = tokenizer.encode(line, false)?;
        ids.push(eos);
        texts.push(ids);
    }
    let (mut docs, skipped) = pack(&texts, bos, opts.seqlen);
    if let Some(n) = opts.max_docs {
        docs.truncate(n);
    }
    if docs.is_empty() {
        bail!(
            "{}: no document to evaluate (empty text, or every line longer than --seqlen {})",
            opts.text.display(),
            opts.seqlen
        );
    }
    let model = Model::new(weights, CpuBackend::from_env(opts.threads)?);
    let vocab = model.vocab_size();
    let (mut total, mut count) = (0.0f64, 0u64);
    let start = Instant::now();
    for (i, doc) in docs.iter().enumerate() {
        let mut cache = model.new_cache(doc.len());
        let out = model.forward(
            doc,
            &mut cache,
            ForwardOptions {
                all_logits: true,
                ..Default::default()
            },
        )?;
        for (pos, &target) in doc.iter().enumerate().skip(1) {
            total += nll(&out.logits[(pos - 1) * vocab..pos * vocab], target);
            count += 1;
        }
        eprintln!(
            "document {}/{}: running perplexity {:.4}",
            i + 1,
            docs.len(),
            (total / count as f64).exp()
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    let mean = total / count as f64;
    let report = PplReport {
        kind: "ppl",
        meta: RunMeta::now(),
        model: opts.model.display().to_string(),
        text: opts.text.display().to_string(),
        seqlen: opts.seqlen,
        texts: texts.len(),
        skipped_texts: skipped,
        documents: docs.len(),
        predicted_tokens: count,
        mean_nll: mean,
        perplexity: mean.exp(),
        tokens_per_s: docs.iter().map(|d| d.len()).sum::<usize>() as f64 / seconds,
    };
    println!(
        "perplexity {:.4} (mean NLL {:.5}) over {} tokens in {} documents of at most {} tokens ({} texts, {} skipped)",
        report.perplexity, report.mean_nll, count, report.documents, opts.seqlen, report.texts, skipped
    );
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_follows_eval_ppl() {
        let texts = vec![
            vec![10, 2],
            vec![11, 12, 2],
            vec![13, 14, 15, 16, 17, 2],
            vec![18, 2],
        ];
        // As eval_ppl.py, quirks included: a text of exactly `seqlen` tokens is kept and makes
        // a document of seqlen + 1 with its BOS.
        let (docs, skipped) = pack(&texts, 1, 6);
        assert_eq!(
            docs,
            vec![
                vec![1, 10, 2, 11, 12, 2],
                vec![1, 13, 14, 15, 16, 17, 2],
                vec![1, 18, 2]
            ]
        );
        assert_eq!(skipped, 0);
        let (docs, skipped) = pack(&texts, 1, 5);
        assert_eq!(
            docs,
            vec![vec![1, 10, 2], vec![1, 11, 12, 2], vec![1, 18, 2]]
        );
        assert_eq!(skipped, 1, "the 6-token text alone exceeds 5");
        assert!(pack(&[], 1, 8).0.is_empty());
    }

    #[test]
    fn nll_is_the_log_softmax() {
        let logits = [0.0f32, (2.0f64).ln() as f32];
        // softmax = [1/3, 2/3]
        assert!((nll(&logits, 0) - 3f64.ln()).abs() < 1e-6);
        assert!((nll(&logits, 1) - 1.5f64.ln()).abs() < 1e-6);
        let big = [1000.0f32, 1000.0];
        assert!((nll(&big, 1) - 2f64.ln()).abs() < 1e-9);
    }
}
