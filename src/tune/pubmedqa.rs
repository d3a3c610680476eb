//! A fine-tuning run on PubMedQA, made ready: the data read and split into folds, the training
//! questions' abstracts indexed, and the examples built with retrieved sources, the way the app
//! will prompt. `train::train` then runs it. The CLI's `tune` reads files and prints; this is the
//! rest.

use super::data::{self, Example, QaEntry};
use super::TuneConfig;
use crate::error::{Error, Result};
use crate::llm::llama::Weights;
use crate::llm::Generator;
use crate::{models, Engine};
use std::collections::BTreeMap;
use std::path::Path;

/// What `train::train` needs: an engine holding the generator to train, the examples, the
/// held-out examples for validation, and the provenance written into the adapter.
pub struct Prepared {
    pub engine: Engine,
    pub examples: Vec<Example>,
    pub validation: Vec<Example>,
    pub info: BTreeMap<String, String>,
}

/// Which questions train and which validate: with `fold`, that fold is held out (its first
/// `validation_examples` questions validate); without, every question trains. `limit` keeps the
/// first N training questions only.
pub fn split<'a>(
    entries: &'a [QaEntry],
    cfg: &TuneConfig,
    fold: Option<usize>,
    limit: Option<usize>,
) -> Result<(Vec<&'a QaEntry>, Vec<&'a QaEntry>)> {
    if let Some(f) = fold.filter(|&f| f >= cfg.data.folds) {
        return Err(Error::Input(format!(
            "--fold {f}: the config splits the data into {} folds (0..{})",
            cfg.data.folds,
            cfg.data.folds - 1
        )));
    }
    let folds = data::folds(entries, cfg.data.folds);
    let in_fold = |want: bool| entries.iter().zip(&folds).filter(move |(_, &f)| (Some(f) == fold) == want);
    let mut train: Vec<&QaEntry> = in_fold(false).map(|(e, _)| e).collect();
    if let Some(n) = limit {
        train.truncate(n);
    }
    let held_out = in_fold(true).map(|(e, _)| e).take(cfg.data.validation_examples).collect();
    Ok((train, held_out))
}

/// Read `data_bytes` (PubMedQA's JSON, named `data_name` in messages and provenance) and make
/// the run ready. `progress(done, total)` follows the indexing of the training abstracts.
pub fn prepare(
    models_dir: &Path,
    cfg: &TuneConfig,
    data_bytes: &[u8],
    data_name: &str,
    fold: Option<usize>,
    limit: Option<usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Prepared> {
    let entries = data::read_pubmedqa(data_bytes, data_name)?;
    let (train_entries, held_out) = split(&entries, cfg, fold, limit)?;

    let base_path = models::generator_path(models_dir);
    let base_bytes = models::read(&base_path)?;
    let generator =
        Generator::from_gguf_bytes_with(&base_bytes, &base_path.display().to_string(), Weights::QuantizedAndDense)?;
    let mut engine = Engine::new(models::load_embedder(models_dir)?, Some(generator));
    // Training prompts retrieve from the training questions' abstracts only.
    data::index_entries(&mut engine, &train_entries, progress)?;
    let (examples, stats) = data::build_examples(
        &engine,
        &train_entries,
        cfg.data.sources,
        cfg.data.no_answer_fraction,
        cfg.max_seq_len,
        cfg.seed,
    )?;
    let validation = if held_out.is_empty() {
        vec![]
    } else {
        // Held-out examples retrieve among the held-out abstracts only.
        let mut v_engine = Engine::new(models::load_embedder(models_dir)?, engine.take_generator());
        data::index_entries(&mut v_engine, &held_out, &mut |_, _| {})?;
        let built = data::build_examples(
            &v_engine,
            &held_out,
            cfg.data.sources,
            cfg.data.no_answer_fraction,
            cfg.max_seq_len,
            cfg.seed + 1,
        );
        engine.set_generator(v_engine.take_generator());
        built?.0
    };

    let file_name = Path::new(data_name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let stats = serde_json::to_string(&stats).map_err(|e| Error::Internal(format!("example statistics: {e}")))?;
    let info: BTreeMap<String, String> = [
        ("name", "pocketrag-pubmedqa-lora".to_string()),
        ("base_model", models::GENERATOR_FILE.to_string()),
        ("base_sha256", models::sha256_hex(&base_bytes)),
        ("data_file", file_name),
        ("data_sha256", models::sha256_hex(data_bytes)),
        ("folds", cfg.data.folds.to_string()),
        ("holdout_fold", fold.map_or("none".to_string(), |f| f.to_string())),
        ("train_questions", train_entries.len().to_string()),
        ("examples", stats),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Prepared { engine, examples, validation, info })
}
