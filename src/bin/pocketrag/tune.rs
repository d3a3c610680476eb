//! `pocketrag tune`: a LoRA adapter trained on PubMedQA, into a run folder.

use crate::counting_bar;
use anyhow::{bail, Context, Result};
use pocketrag::llm::llama::Weights;
use pocketrag::{models, Engine};
use std::path::Path;

#[allow(clippy::too_many_arguments)]
pub(crate) fn tune(
    models_dir: &Path,
    config: &Path,
    data_path: &Path,
    fold: Option<usize>,
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    limit: Option<usize>,
) -> Result<()> {
    use pocketrag::tune::{data, train, TuneConfig};
    let cfg_text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let cfg = TuneConfig::from_json(&cfg_text)?;
    let data_bytes = std::fs::read(data_path).with_context(|| format!("cannot read {}", data_path.display()))?;
    let entries = data::read_pubmedqa(&data_bytes, &data_path.display().to_string())?;
    let folds = data::folds(&entries, cfg.data.folds);
    if let Some(f) = fold.filter(|&f| f >= cfg.data.folds) {
        bail!("--fold {f}: the config splits the data into {} folds (0..{})", cfg.data.folds, cfg.data.folds - 1);
    }
    let mut train_entries: Vec<&data::QaEntry> =
        entries.iter().zip(&folds).filter(|(_, &f)| Some(f) != fold).map(|(e, _)| e).collect();
    if let Some(n) = limit {
        train_entries.truncate(n);
    }
    let held_out: Vec<&data::QaEntry> = entries
        .iter()
        .zip(&folds)
        .filter(|(_, &f)| Some(f) == fold)
        .map(|(e, _)| e)
        .take(cfg.data.validation_examples)
        .collect();

    let base_path = models::generator_path(models_dir);
    let base_bytes = models::read(&base_path)?;
    let generator = pocketrag::llm::Generator::from_gguf_bytes_with(
        &base_bytes,
        &base_path.display().to_string(),
        Weights::QuantizedAndDense,
    )?;
    let mut engine = Engine::new(models::load_embedder(models_dir)?, Some(generator));
    // Training prompts retrieve from the training questions' abstracts only.
    let bar = counting_bar(train_entries.len(), "abstracts indexed");
    data::index_entries(&mut engine, &train_entries, &mut |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    let (examples, stats) = data::build_examples(
        &engine,
        &train_entries,
        cfg.data.sources,
        cfg.data.no_answer_fraction,
        cfg.max_seq_len,
        cfg.seed,
    )?;
    eprintln!("training examples: {}", serde_json::to_string(&stats)?);
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

    let mut info = std::collections::BTreeMap::new();
    info.insert("name".to_string(), "pocketrag-pubmedqa-lora".to_string());
    info.insert("base_model".to_string(), models::GENERATOR_FILE.to_string());
    info.insert("base_sha256".to_string(), models::sha256_hex(&base_bytes));
    info.insert(
        "data_file".to_string(),
        data_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
    );
    info.insert("data_sha256".to_string(), models::sha256_hex(&data_bytes));
    info.insert("folds".to_string(), cfg.data.folds.to_string());
    info.insert("holdout_fold".to_string(), fold.map_or("none".to_string(), |f| f.to_string()));
    info.insert("train_questions".to_string(), train_entries.len().to_string());
    info.insert("examples".to_string(), serde_json::to_string(&stats)?);
    let model = engine.generator_mut().expect("loaded above").model_mut();
    let run = train::RunOptions { dir: out, resume, stop_after };
    let (_, summary) = train::train(model, &examples, &validation, &cfg, &info, &run, &mut |line| eprintln!("{line}"))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
