//! The training loop: LoRA on a frozen base model, loss on the answer tokens only, AdamW with
//! warm-up and a schedule, gradients accumulated over `batch_size` examples, a resumable
//! checkpoint every few steps, and the loss curve written as CSV and SVG as it goes.
//!
//! A run folder holds:
//!   config.json        the TuneConfig used
//!   info.json          base model, data file and its sha256, fold, example counts
//!   loss.csv           one row per optimizer step
//!   loss.svg           the curve (redrawn at each checkpoint)
//!   checkpoint/        adapter + optimizer moments + step, to resume from
//!   adapter.safetensors  the finished adapter (f32)
//!   adapter-f16.safetensors  the same at half the size, the one we ship

use super::config::TuneConfig;
use super::data::Example;
use super::optim::AdamW;
use super::plot;
use crate::error::{Error, Result};
use crate::llm::llama::Llama;
use crate::llm::lora::{Adapter, AdapterVars};
use crate::time::Stopwatch;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

/// Mean cross-entropy of the model's predictions for the answer tokens of `ex` (each answer token
/// predicted from everything before it). Gradients flow to the adapter.
pub fn example_loss(model: &Llama, ex: &Example) -> Result<Tensor> {
    if ex.prompt_len == 0 || ex.prompt_len >= ex.ids.len() {
        return Err(Error::Input(format!("example {} has no answer tokens", ex.id)));
    }
    let at: Vec<u32> = (ex.prompt_len - 1..ex.ids.len() - 1).map(|p| p as u32).collect();
    let logits = model.forward_train(&ex.ids, &at)?;
    let targets = Tensor::new(&ex.ids[ex.prompt_len..], &Device::Cpu)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

/// Mean loss over `examples`, without gradients.
pub fn mean_loss(model: &Llama, examples: &[Example]) -> Result<f64> {
    let mut sum = 0.0;
    for ex in examples {
        sum += example_loss(model, ex)?.detach().to_scalar::<f32>()? as f64;
    }
    Ok(sum / examples.len().max(1) as f64)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    /// Optimizer steps completed.
    step: usize,
}

/// Where and how far to run.
pub struct RunOptions<'a> {
    pub dir: &'a Path,
    /// Continue the checkpoint in `dir`, if there is one.
    pub resume: bool,
    /// Stop (with a checkpoint) once this many optimizer steps are done, to continue later with
    /// `resume`: long runs on a shared machine go in pieces.
    pub stop_after: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Optimizer steps done (in total, counting resumed ones) and planned.
    pub steps: usize,
    pub total_steps: usize,
    /// False when `stop_after` ended the run early; the adapter file is written only when true.
    pub finished: bool,
    pub examples_seen: usize,
    /// Mean training loss over the first and the last 16 steps of this run.
    pub first_loss: f64,
    pub last_loss: f64,
    pub validation_loss: Option<f64>,
    pub seconds: f64,
}

/// Train an adapter for `model` on `train`, writing the run into `dir` (see the module comment).
/// With `resume`, an existing checkpoint in `dir` is continued, provided the config and `info`
/// are the same as when it was written. `log` gets one line per step.
pub fn train(
    model: &mut Llama,
    train: &[Example],
    validation: &[Example],
    cfg: &TuneConfig,
    info: &BTreeMap<String, String>,
    run: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<(Adapter, TrainSummary)> {
    let (dir, resume) = (run.dir, run.resume);
    if train.is_empty() {
        return Err(Error::Input("no training examples".into()));
    }
    fs::create_dir_all(dir)?;
    let config_json = serde_json::to_string_pretty(cfg).expect("config serialises");
    let info_json = serde_json::to_string_pretty(info).expect("info serialises");
    let checkpoint = dir.join("checkpoint");
    let resuming = resume && checkpoint.join("state.json").exists();
    if resuming {
        let same = |f: &str, want: &str| fs::read_to_string(dir.join(f)).map(|s| s == want).unwrap_or(false);
        if !same("config.json", &config_json) || !same("info.json", &info_json) {
            return Err(Error::Input(format!(
                "{} was written with a different config or data; start a new run folder",
                dir.display()
            )));
        }
    } else {
        if dir.join("loss.csv").exists() && !resume {
            return Err(Error::Input(format!("{} already holds a run (use --resume to continue it)", dir.display())));
        }
        fs::write(dir.join("config.json"), &config_json)?;
        fs::write(dir.join("info.json"), &info_json)?;
        fs::write(dir.join("loss.csv"), "step,epoch,examples,loss,validation_loss,learning_rate,tokens,seconds\n")?;
    }

    let (mut adapter, vars) = Adapter::new_trainable(&cfg.lora, &model.projections()?, cfg.seed, &Device::Cpu)?;
    adapter.info = info.clone();
    model.set_adapter(Some(&adapter))?;
    let mut opt = AdamW::new(cfg.weight_decay);
    let mut start = 0;
    if resuming {
        start = load_checkpoint(&checkpoint, &vars, &mut opt)?;
        truncate_log(&dir.join("loss.csv"), start)?;
        log(&format!("resuming after step {start}"));
    }

    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let orders: Vec<Vec<usize>> = (0..cfg.epochs)
        .map(|e| {
            let mut order: Vec<usize> = (0..train.len()).collect();
            order.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(cfg.seed.wrapping_add(e as u64)));
            order
        })
        .collect();
    let (mut history, mut val_history) = read_history(&dir.join("loss.csv"))?;
    let clock = Stopwatch::start();
    let mut seen = 0;
    let end = run.stop_after.map_or(total, |s| s.clamp(start, total));
    for step in start..end {
        let (epoch, within) = (step / steps_per_epoch, step % steps_per_epoch);
        let batch: Vec<&Example> = orders[epoch]
            [within * cfg.batch_size..((within + 1) * cfg.batch_size).min(train.len())]
            .iter()
            .map(|&i| &train[i])
            .collect();
        let mut grads: HashMap<String, (Tensor, Tensor)> = HashMap::new();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for ex in &batch {
            let loss = example_loss(model, ex)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            tokens += ex.ids.len();
            let store = (loss / batch.len() as f64)?.backward()?;
            for (name, a, b) in &vars {
                let ga = store.get(a.as_tensor()).ok_or_else(|| Error::Input(format!("no gradient reached {name}")))?;
                let gb = store.get(b.as_tensor()).ok_or_else(|| Error::Input(format!("no gradient reached {name}")))?;
                let entry = match grads.remove(name) {
                    Some((sa, sb)) => ((sa + ga)?, (sb + gb)?),
                    None => (ga.clone(), gb.clone()),
                };
                grads.insert(name.clone(), entry);
            }
        }
        let lr = cfg.learning_rate_at(step, total);
        for (name, a, b) in &vars {
            let (ga, gb) = &grads[name];
            opt.update(&format!("{name}.lora_a"), a, ga, lr)?;
            opt.update(&format!("{name}.lora_b"), b, gb, lr)?;
        }
        opt.finish_step();
        seen += batch.len();
        let loss = loss_sum / batch.len() as f64;
        let done = step + 1;
        history.push((done, loss));
        let checkpointing = done % cfg.checkpoint_every == 0 || done == end;
        let val = if checkpointing && !validation.is_empty() {
            let v = mean_loss(model, validation)?;
            val_history.push((done, v));
            Some(v)
        } else {
            None
        };
        let epoch_f = epoch as f64 + (within + 1) as f64 / steps_per_epoch as f64;
        append(
            &dir.join("loss.csv"),
            &format!(
                "{done},{epoch_f:.4},{},{loss:.5},{},{lr:.3e},{tokens},{:.1}\n",
                done * cfg.batch_size,
                val.map(|v| format!("{v:.5}")).unwrap_or_default(),
                clock.ms() / 1000.0
            ),
        )?;
        log(&format!(
            "step {done}/{total}  loss {loss:.4}{}  lr {lr:.2e}  {tokens} tokens  {:.0}s",
            val.map(|v| format!("  held-out {v:.4}")).unwrap_or_default(),
            clock.ms() / 1000.0
        ));
        if checkpointing {
            save_checkpoint(&checkpoint, &adapter, &opt, done)?;
            let title = format!("LoRA fine-tune: loss per optimizer step ({} examples per step)", cfg.batch_size);
            fs::write(dir.join("loss.svg"), plot::loss_svg(&title, &history, &val_history))?;
        }
    }
    let finished = end == total;
    if finished {
        fs::write(dir.join("adapter.safetensors"), adapter.to_bytes()?)?;
        fs::write(dir.join("adapter-f16.safetensors"), adapter.to_bytes_as(candle_core::DType::F16)?)?;
    }
    let mean = |pts: &[(usize, f64)]| pts.iter().map(|p| p.1).sum::<f64>() / pts.len().max(1) as f64;
    let summary = TrainSummary {
        steps: end,
        total_steps: total,
        finished,
        examples_seen: seen,
        first_loss: mean(&history[..history.len().min(16)]),
        last_loss: mean(&history[history.len().saturating_sub(16)..]),
        validation_loss: val_history.last().map(|v| v.1),
        seconds: clock.ms() / 1000.0,
    };
    Ok((adapter, summary))
}

fn append(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(line.as_bytes())?;
    Ok(())
}

/// (step, loss) points.
type Curve = Vec<(usize, f64)>;

/// Training and validation curves already in a run's loss.csv.
fn read_history(path: &Path) -> Result<(Curve, Curve)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in fs::read_to_string(path)?.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (Some(step), Some(loss)) =
            (cols.first().and_then(|s| s.parse().ok()), cols.get(3).and_then(|s| s.parse().ok()))
        else {
            continue;
        };
        train.push((step, loss));
        if let Some(v) = cols.get(4).and_then(|s| s.parse().ok()) {
            val.push((step, v));
        }
    }
    Ok((train, val))
}

/// Drop rows logged after the checkpoint being resumed (they will be redone).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let text = fs::read_to_string(path)?;
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0 || l.split(',').next().and_then(|s| s.parse::<usize>().ok()).is_some_and(|s| s <= step)
        })
        .map(|(_, l)| l)
        .collect();
    fs::write(path, kept.join("\n") + "\n")?;
    Ok(())
}

/// Written to a fresh folder then renamed, so an interrupted save leaves the previous one intact.
fn save_checkpoint(dir: &Path, adapter: &Adapter, opt: &AdamW, step: usize) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::write(tmp.join("adapter.safetensors"), adapter.to_bytes()?)?;
    let mut moments: Vec<(String, Tensor)> = Vec::new();
    for (name, (m, v)) in &opt.moments {
        moments.push((format!("{name}.m"), m.clone()));
        moments.push((format!("{name}.v"), v.clone()));
    }
    let bytes = safetensors::serialize(moments.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::Input(format!("cannot write optimizer state: {e}")))?;
    fs::write(tmp.join("optimizer.safetensors"), bytes)?;
    fs::write(tmp.join("state.json"), serde_json::to_string(&CheckpointState { step }).expect("serialises"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(())
}

/// Restore the adapter's values and the optimizer from a checkpoint; returns its step.
fn load_checkpoint(dir: &Path, vars: &AdapterVars, opt: &mut AdamW) -> Result<usize> {
    let file = dir.join("adapter.safetensors");
    let saved = Adapter::from_bytes(&fs::read(&file)?, &file.display().to_string())?;
    for (name, a, b) in vars {
        let pair = saved.pairs.get(name).ok_or_else(|| Error::Input(format!("checkpoint lacks {name}")))?;
        a.set(&pair.a)?;
        b.set(&pair.b)?;
    }
    let mut moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)?;
    for (name, _, _) in vars {
        for part in ["lora_a", "lora_b"] {
            let key = format!("{name}.{part}");
            let m = moments.remove(&format!("{key}.m"));
            let v = moments.remove(&format!("{key}.v"));
            if let (Some(m), Some(v)) = (m, v) {
                opt.moments.insert(key, (m, v));
            }
        }
    }
    let state: CheckpointState = serde_json::from_str(&fs::read_to_string(dir.join("state.json"))?)
        .map_err(|e| Error::Input(format!("checkpoint state: {e}")))?;
    opt.t = state.step;
    Ok(state.step)
}
