//! Fine-tuning: a LoRA adapter trained on the frozen, quantized base model (QLoRA-style: the GGUF
//! weights are dequantized once and never change), to teach the behaviour retrieval needs from a
//! small model: answer from the numbered sources, cite them, be brief, and say so when the
//! sources do not hold the answer. See `models/adapters/README.md` for the adapter we ship.

pub mod config;
pub mod data;
mod forward;
pub mod optim;
pub mod plot;
pub mod pubmedqa;
pub mod train;

pub use config::TuneConfig;
