//! Where the fetched model files live on disk (native only; the browser receives bytes).
//! `make models` puts them there; see `models/manifest.json`.

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::llm::llama::Weights;
use crate::llm::Generator;
use std::path::{Path, PathBuf};

pub const GENERATOR_FILE: &str = "smollm2/SmolLM2-135M-Instruct.Q8_0.gguf";
pub const EMBEDDER_DIR: &str = "minilm";

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (run `make models`)" } else { "" };
        Error::model(path.display(), format!("{e}{hint}"))
    })
}

pub fn load_embedder(dir: &Path) -> Result<Embedder> {
    let d = dir.join(EMBEDDER_DIR);
    let weights = read(&d.join("model.safetensors"))?;
    let tokenizer = read(&d.join("tokenizer.json"))?;
    let config = read(&d.join("config.json"))?;
    Embedder::from_bytes(&weights, &tokenizer, &config)
}

pub fn generator_path(dir: &Path) -> PathBuf {
    dir.join(GENERATOR_FILE)
}

pub fn load_generator(path: &Path) -> Result<Generator> {
    load_generator_with(path, Weights::Quantized)
}

pub fn load_generator_with(path: &Path, weights: Weights) -> Result<Generator> {
    let bytes = read(path)?;
    Generator::from_gguf_bytes_with(&bytes, &path.display().to_string(), weights)
}

/// Hex sha256 of `bytes`: names the exact model and data files a fine-tune was made from.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the adapter we ship lives, and the tuned GGUF `make models` makes from it.
pub const ADAPTER_FILE: &str = "adapters/pubmedqa-lora.safetensors";
pub const TUNED_GENERATOR_FILE: &str = "smollm2/SmolLM2-135M-Instruct-pocketrag.Q8_0.gguf";
