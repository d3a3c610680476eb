//! `pocketrag tune`: a LoRA adapter trained on PubMedQA, into a run folder.

use crate::counting_bar;
use anyhow::{Context, Result};
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
    use pocketrag::tune::{pubmedqa, train, TuneConfig};
    let cfg_text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let cfg = TuneConfig::from_json(&cfg_text)?;
    let data_bytes = std::fs::read(data_path).with_context(|| format!("cannot read {}", data_path.display()))?;
    let bar = counting_bar(0, "abstracts indexed");
    let mut prepared = pubmedqa::prepare(
        models_dir,
        &cfg,
        &data_bytes,
        &data_path.display().to_string(),
        fold,
        limit,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        },
    )?;
    bar.finish_and_clear();
    eprintln!("training examples: {}", prepared.info["examples"]);
    let model = prepared.engine.generator_mut().expect("prepare loads the generator").model_mut();
    let run = train::RunOptions { dir: out, resume, stop_after };
    let (_, summary) =
        train::train(model, &prepared.examples, &prepared.validation, &cfg, &prepared.info, &run, &mut |line| {
            eprintln!("{line}")
        })?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
