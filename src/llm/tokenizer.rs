//! The generator's tokenizer, rebuilt from the GGUF file's own metadata so that one file is the
//! single source of truth for weights and vocabulary (and so it works in the browser, where
//! candle's GGUF tokenizer conversion is not available).
//!
//! SmolLM2 uses GPT-2 style byte-level BPE. Its pre-tokenizer (`tokenizer.ggml.pre = "smollm"` in
//! llama.cpp) first isolates every digit, then applies the GPT-2 regex; byte-level mapping turns
//! each byte into a printable symbol before the merges run.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// llama.cpp's token types: 3 = control (chat markup), 4 = user-defined. Both are matched as
/// whole tokens before BPE, never split into bytes.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

pub fn from_gguf(ct: &Content, file: &str) -> Result<Tokenizer> {
    let get =
        |key: &str| ct.metadata.get(key).ok_or_else(|| Error::model(file, format!("no {key} in the GGUF metadata")));
    let kind = get("tokenizer.ggml.model")?.to_string().map_err(|e| Error::model(file, e))?;
    if kind != "gpt2" {
        return Err(Error::model(
            file,
            format!("tokenizer type {kind:?} is not supported (only byte-level BPE, \"gpt2\")"),
        ));
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        let values = get(key)?.to_vec().map_err(|e| Error::model(file, format!("{key}: {e}")))?;
        values.iter().map(|v| v.to_string().cloned().map_err(|e| Error::model(file, format!("{key}: {e}")))).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(vs)) => vs.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };

    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::model(file, format!("malformed merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::model(file, format!("cannot build BPE: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, false, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| Error::model(file, format!("cannot add special tokens: {e}")))?;
    Ok(tokenizer)
}
