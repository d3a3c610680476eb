//! The training configuration, read from a JSON file (see `models/tune.json` for ours).

use crate::error::{Error, Result};
use crate::llm::lora::LoraConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    pub lora: LoraConfig,
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// Linear warm-up from 0 over this many optimizer steps, then the schedule.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub weight_decay: f64,
    pub epochs: usize,
    /// Examples per optimizer step. Examples differ in length, so they are not padded into one
    /// batch: their gradients are accumulated one by one.
    pub batch_size: usize,
    /// Longest example (prompt + answer) in tokens; sources are shortened to fit.
    pub max_seq_len: usize,
    pub seed: u64,
    /// Save a resumable checkpoint every this many optimizer steps (and at the end).
    pub checkpoint_every: usize,
    pub data: DataConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Cosine decay from the peak to a tenth of it at the last step.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Sources retrieved into each training prompt.
    pub sources: usize,
    /// Share of examples whose own passages are taken out of the sources, so that the right
    /// answer is the NOT_FOUND sentence (RAFT's "no gold document" examples).
    pub no_answer_fraction: f64,
    /// Cross-validation folds the data file is split into (see `data::folds`).
    pub folds: usize,
    /// Held-out examples whose loss is reported at each checkpoint (taken from the held-out fold;
    /// 0 when training on everything).
    pub validation_examples: usize,
}

impl TuneConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let c: TuneConfig = serde_json::from_str(text).map_err(|e| Error::Input(format!("tune config: {e}")))?;
        c.lora.check()?;
        let bad = |what: &str| Err(Error::Input(format!("tune config: {what}")));
        if c.batch_size == 0 || c.epochs == 0 || c.checkpoint_every == 0 {
            return bad("batch_size, epochs and checkpoint_every must be at least 1");
        }
        if c.learning_rate.is_nan() || c.learning_rate <= 0.0 {
            return bad("learning_rate must be positive");
        }
        if c.data.sources == 0 || c.data.folds < 2 {
            return bad("data.sources must be at least 1 and data.folds at least 2");
        }
        if !(0.0..1.0).contains(&c.data.no_answer_fraction) {
            return bad("data.no_answer_fraction must be in [0, 1)");
        }
        if c.max_seq_len < 128 {
            return bad("max_seq_len must be at least 128");
        }
        Ok(c)
    }

    /// Learning rate at optimizer step `step` (from 0) of `total`.
    pub fn learning_rate_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Cosine => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let floor = 0.1 * self.learning_rate;
                floor + (self.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}
