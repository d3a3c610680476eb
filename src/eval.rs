//! Measuring what retrieval and fine-tuning each buy, on PubMedQA (`pocketrag eval`).
//!
//! The corpus is every entry's abstract (one document per question), so a question's gold
//! document is its own. Retrieval is scored on the documents of the ranked chunks; answers are
//! scored for the decision they give (the first yes / no / maybe) and for citing the gold
//! document, in four configurations: base or tuned model, without or with retrieval.
//!
//! The tuned model is only ever asked questions it was not trained on: an adapter records the
//! sha256 of its training file and the fold it held out, and an entry is answered only by an
//! adapter whose training data did not include it.

use crate::error::{Error, Result};
use crate::llm::lora::Adapter;
use crate::rag::{Engine, Mode};
use crate::tune::data::{self, QaEntry};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub mod calibrate;
pub mod qa;
pub mod squad;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetrievalScores {
    #[serde(rename = "recall@1")]
    pub recall_at_1: f64,
    #[serde(rename = "recall@5")]
    pub recall_at_5: f64,
    pub mrr: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnswerScores {
    /// Share of answers whose decision equals the expert's.
    pub accuracy: f64,
    /// Share of answers citing a passage of the question's own abstract (by the model or matched).
    pub cites_gold: f64,
    /// The same, counting only citations the model wrote itself.
    pub cites_gold_by_model: f64,
    /// Share of answers giving no decision at all (including "the documents do not contain...").
    pub no_decision: f64,
    pub mean_answer_tokens: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigScores {
    pub no_rag: AnswerScores,
    pub rag: AnswerScores,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub n: usize,
    pub retrieval: RetrievalScores,
    pub answers: BTreeMap<String, ConfigScores>,
    /// Decision counts of the expert labels, and the majority-class accuracy they imply.
    pub labels: BTreeMap<String, usize>,
    pub majority_accuracy: f64,
    pub seconds: f64,
}

/// Rank (from 1) of document `gold` among the documents of `ranked_docs`, taken in order of
/// first appearance.
fn doc_rank(ranked_docs: &[&str], gold: &str) -> Option<usize> {
    let mut seen: Vec<&str> = Vec::new();
    for d in ranked_docs {
        if !seen.contains(d) {
            seen.push(d);
            if *d == gold {
                return Some(seen.len());
            }
        }
    }
    None
}

/// Retrieval scores for a question whose gold document has rank `rank` (None: not retrieved).
fn score_rank(rank: Option<usize>) -> [f64; 4] {
    match rank {
        Some(r) => [
            f64::from(r == 1),
            f64::from(r <= 5),
            1.0 / r as f64,
            if r <= 10 { 1.0 / (r as f64 + 1.0).log2() } else { 0.0 },
        ],
        None => [0.0; 4],
    }
}

/// Which adapter may answer each entry, or why none may. `file_sha256` is the evaluated file's.
pub fn assign_adapters(entries: &[QaEntry], file_sha256: &str, adapters: &[Adapter]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(entries.len());
    let mut folds_cache: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let mut pick = None;
        for (a, adapter) in adapters.iter().enumerate() {
            if adapter.info.get("data_sha256").map(String::as_str) != Some(file_sha256) {
                pick = Some(a);
                break;
            }
            let folds: Option<usize> = adapter.info.get("folds").and_then(|f| f.parse().ok());
            let holdout: Option<usize> = adapter.info.get("holdout_fold").and_then(|f| f.parse().ok());
            if let (Some(k), Some(h)) = (folds, holdout) {
                let fold = folds_cache.entry(k).or_insert_with(|| data::folds(entries, k))[i];
                if fold == h {
                    pick = Some(a);
                    break;
                }
            }
        }
        match pick {
            Some(a) => out.push(a),
            None => {
                return Err(Error::Input(format!(
                    "question {} was in the training data of every adapter given; pass adapters trained with \
                     its fold held out (pocketrag tune --fold)",
                    entry.id
                )))
            }
        }
    }
    Ok(out)
}

/// One question's outcome: where retrieval ranked its abstract, and the four answers. Written one
/// per line (JSONL) as the evaluation goes, so a long run can be inspected, and resumed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Record {
    pub id: String,
    pub expected: data::Decision,
    /// Rank of the question's own abstract among the retrieved documents (None: not in the top 50
    /// chunks).
    pub gold_rank: Option<usize>,
    /// By configuration: "base/no_rag", "base/rag", "tuned/no_rag", "tuned/rag".
    pub answers: BTreeMap<String, RecordedAnswer>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RecordedAnswer {
    pub answer: String,
    pub decision: Option<data::Decision>,
    pub cites_gold: bool,
    pub cites_gold_by_model: bool,
    pub tokens: usize,
}

const CONFIGS: [(&str, bool, bool); 4] = [
    ("base/no_rag", false, false),
    ("base/rag", false, true),
    ("tuned/no_rag", true, false),
    ("tuned/rag", true, true),
];

/// Retrieve for `entry` and answer it four ways. The engine's library must hold the corpus and it
/// must have a generator; `adapter` answers in the tuned configurations.
pub fn evaluate_one(engine: &mut Engine, entry: &QaEntry, adapter: &Adapter, k: usize) -> Result<Record> {
    let gold = data::document_name(&entry.id);
    let hits = engine.search(&entry.question, 50)?.hits;
    let docs: Vec<&str> = hits.iter().map(|h| h.doc.as_str()).collect();
    let gold_rank = doc_rank(&docs, &gold);
    let mut answers = BTreeMap::new();
    // Through the engine's own switch, so each answer records which model gave it.
    engine.load_adapter(adapter.clone())?;
    for (config, tuned, rag) in CONFIGS {
        engine.use_adapter(tuned)?;
        let mode = if rag { Mode::Rag } else { Mode::NoRag };
        let a = engine.answer(&data::asked(entry), mode, k, &mut |_| {}, &|| false)?;
        let cites = |by_model: bool| {
            a.citations.iter().any(|c| c.doc == gold && (!by_model || c.by == crate::rag::CitedBy::Model))
        };
        answers.insert(
            config.to_string(),
            RecordedAnswer {
                decision: data::parse_decision(&a.answer),
                cites_gold: cites(false),
                cites_gold_by_model: cites(true),
                tokens: a.generated_tokens,
                answer: a.answer,
            },
        );
    }
    engine.use_adapter(false)?;
    Ok(Record { id: entry.id.clone(), expected: entry.decision, gold_rank, answers })
}

/// Which questions of a PubMedQA file a run asks, and how.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The first N questions only (the corpus is still every abstract: distractors stay the same).
    pub limit: Option<usize>,
    pub k: usize,
    pub max_tokens: usize,
    /// Every N-th question starting at I, as (I, N), so that processes can share a machine.
    pub shard: (usize, usize),
}

/// Ask the questions of `bytes` (PubMedQA's JSON, named `file`) four ways each, the tuned ones
/// by an adapter of `adapters` that did not train on that question. Records in `done` (from an
/// earlier, stopped run) are kept, not asked again; `record` sees each new one as it is made.
/// `progress(what, done, total)` follows the indexing, then the questions.
pub fn run(
    models_dir: &Path,
    bytes: &[u8],
    file: &str,
    adapters: &[Adapter],
    options: &RunOptions,
    mut done: HashMap<String, Record>,
    record: &mut dyn FnMut(&Record) -> Result<()>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<Record>> {
    let all = data::read_pubmedqa(bytes, file)?;
    // Fold assignment needs the whole file, so adapters are matched before the limit applies.
    let assigned = assign_adapters(&all, &crate::models::sha256_hex(bytes), adapters)?;
    let (shard_i, shard_n) = options.shard;
    let (entries, assigned): (Vec<&QaEntry>, Vec<usize>) = all
        .iter()
        .zip(assigned)
        .take(options.limit.unwrap_or(all.len()))
        .enumerate()
        .filter(|(i, _)| i % shard_n == shard_i)
        .map(|(_, pair)| pair)
        .unzip();
    let generator = crate::models::load_generator_with(
        &crate::models::generator_path(models_dir),
        crate::llm::llama::Weights::QuantizedAndDense,
    )?;
    let mut engine = Engine::new(crate::models::load_embedder(models_dir)?, Some(generator));
    engine.settings.generate.max_tokens = options.max_tokens;
    let corpus: Vec<&QaEntry> = all.iter().collect();
    data::index_entries(&mut engine, &corpus, &mut |d, total| progress("abstracts indexed", d, total))?;
    let mut records = Vec::with_capacity(entries.len());
    for (i, (entry, &a)) in entries.iter().copied().zip(&assigned).enumerate() {
        let r = match done.remove(&entry.id) {
            Some(r) => r,
            None => {
                let r = evaluate_one(&mut engine, entry, &adapters[a], options.k)?;
                record(&r)?;
                r
            }
        };
        records.push(r);
        progress("questions, 4 answers each", i + 1, entries.len());
    }
    Ok(records)
}

/// The scores of a set of records.
pub fn report(records: &[Record], seconds: f64) -> EvalReport {
    let n = records.len();
    let per = |x: f64| x / n.max(1) as f64;
    let mut retrieval = [0.0; 4];
    for r in records {
        for (total, s) in retrieval.iter_mut().zip(score_rank(r.gold_rank)) {
            *total += s;
        }
    }
    let mut answers: BTreeMap<String, ConfigScores> = BTreeMap::new();
    for (config, _, rag) in CONFIGS {
        let mut s = [0.0; 5];
        for r in records {
            let Some(a) = r.answers.get(config) else { continue };
            s[0] += f64::from(a.decision == Some(r.expected));
            s[1] += f64::from(a.cites_gold);
            s[2] += f64::from(a.cites_gold_by_model);
            s[3] += f64::from(a.decision.is_none());
            s[4] += a.tokens as f64;
        }
        let scores = AnswerScores {
            accuracy: per(s[0]),
            cites_gold: per(s[1]),
            cites_gold_by_model: per(s[2]),
            no_decision: per(s[3]),
            mean_answer_tokens: per(s[4]),
        };
        let model = config.split('/').next().unwrap_or_default().to_string();
        let c = answers.entry(model).or_default();
        if rag {
            c.rag = scores;
        } else {
            c.no_rag = scores;
        }
    }
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *labels.entry(r.expected.word().to_ascii_lowercase()).or_default() += 1;
    }
    EvalReport {
        n,
        retrieval: RetrievalScores {
            recall_at_1: per(retrieval[0]),
            recall_at_5: per(retrieval[1]),
            mrr: per(retrieval[2]),
            ndcg_at_10: per(retrieval[3]),
        },
        answers,
        majority_accuracy: per(labels.values().copied().max().unwrap_or(0) as f64),
        labels,
        seconds,
    }
}

/// The report as a plain-text table.
pub fn table(r: &EvalReport) -> String {
    let mut out = format!(
        "PubMedQA, {} questions ({}), majority class {:.1}%\n\n",
        r.n,
        r.labels.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        100.0 * r.majority_accuracy
    );
    out += &format!(
        "retrieval   recall@1 {:.3}   recall@5 {:.3}   MRR {:.3}   nDCG@10 {:.3}\n\n",
        r.retrieval.recall_at_1, r.retrieval.recall_at_5, r.retrieval.mrr, r.retrieval.ndcg_at_10
    );
    out += "model   retrieval   accuracy   cites gold (by model)   no decision   answer tokens\n";
    for (config, scores) in &r.answers {
        for (label, s) in [("no", &scores.no_rag), ("yes", &scores.rag)] {
            out += &format!(
                "{config:<7} {label:<11} {:>7.1}%   {:>6.1}% ({:>5.1}%)        {:>6.1}%       {:>6.1}\n",
                100.0 * s.accuracy,
                100.0 * s.cites_gold,
                100.0 * s.cites_gold_by_model,
                100.0 * s.no_decision,
                s.mean_answer_tokens
            );
        }
    }
    out + &format!("\n{:.0} s\n", r.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_documents_not_chunks() {
        assert_eq!(doc_rank(&["a", "a", "b", "c"], "b"), Some(2));
        assert_eq!(doc_rank(&["a", "b"], "z"), None);
        let [r1, r5, mrr, ndcg] = score_rank(Some(3));
        assert_eq!((r1, r5), (0.0, 1.0));
        assert!((mrr - 1.0 / 3.0).abs() < 1e-12 && (ndcg - 0.5).abs() < 1e-12);
        assert_eq!(score_rank(Some(11))[3], 0.0);
    }
}
