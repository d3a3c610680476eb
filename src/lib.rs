//! pocketrag: private document Q&A. Documents are parsed, chunked, embedded and indexed; a
//! question retrieves the best chunks, a small language model answers from them and cites them.
//!
//! Data flows one way through the modules:
//! `ingest` → `chunk` → `embed` → `index` (inside `library`) → `rag` (prompt, `llm`, citations).
//! The CLI (`src/bin/pocketrag/`) and the browser bindings are thin front ends over `rag::Engine`.

#[cfg(any(feature = "bench", not(target_arch = "wasm32")))]
pub mod bench;
pub mod chunk;
pub mod embed;
pub mod error;
pub mod gpu;
pub mod index;
pub mod ingest;
pub mod kernels;
pub mod library;
pub mod llm;
pub mod memory;
mod named;
pub mod rag;
pub mod time;

#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod fuzz;
#[cfg(not(target_arch = "wasm32"))]
pub mod models;
#[cfg(not(target_arch = "wasm32"))]
pub mod tune;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
pub use rag::{Answer, Engine, Mode};
