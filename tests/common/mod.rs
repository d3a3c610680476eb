//! Shared by the integration tests: the real models, fetched by `make models`.

#![allow(dead_code)]

use pocketrag::embed::Embedder;
use pocketrag::llm::Generator;
use pocketrag::models;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn embedder() -> Embedder {
    models::load_embedder(&models_dir()).expect("embedder files (run `make models`)")
}

pub fn generator() -> Generator {
    models::load_generator(&models::generator_path(&models_dir())).expect("generator file (run `make models`)")
}

/// One generator per test binary: loading it takes a while and tests share it in turn.
pub fn shared_generator() -> &'static Mutex<Generator> {
    static G: OnceLock<Mutex<Generator>> = OnceLock::new();
    G.get_or_init(|| Mutex::new(generator()))
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}
