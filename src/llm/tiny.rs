//! A tiny llama in a GGUF file, made in memory: for tests and fuzz seeds that need a model
//! the generator loads and runs, without the real model's 138 MB or its download.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The tiny model's bytes and its parsed header, for tests that read the metadata.
#[cfg(test)]
pub(crate) fn tiny_with_header() -> (Vec<u8>, candle_core::quantized::gguf_file::Content) {
    let bytes = tiny_gguf();
    let header = crate::llm::read_header(&bytes, "tiny.gguf").expect("the tiny model's header reads");
    (bytes, header)
}

/// A one-layer llama in the GGUF layout the generator reads (dimension 32, two heads), with a
/// byte-level vocabulary of 256 symbols plus chat markup and one merge, and a chat template.
pub fn tiny_gguf() -> Vec<u8> {
    use gguf_file::Value;
    let (dim, hidden) = (32usize, 64usize);
    let mut tokens: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    tokens.sort();
    let mut tokens: Vec<String> = tokens.into_iter().map(String::from).collect();
    tokens.extend(["he", "<|im_start|>", "<|im_end|>"].map(String::from));
    let n = tokens.len();
    let mut types = vec![Value::I32(1); n - 2];
    types.extend([Value::I32(3), Value::I32(3)]);
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
        ("llama.block_count", Value::U32(1)),
        ("llama.embedding_length", Value::U32(dim as u32)),
        ("llama.rope.dimension_count", Value::U32(16)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.merges", Value::Array(vec![Value::String("h e".into())])),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 1)),
        ("tokenizer.chat_template", Value::String(template.into())),
    ];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t = |dims: &[usize], seed: u64, dtype: GgmlDType| {
        let w =
            Tensor::from_vec(crate::kernels::random::pseudo_random(dims.iter().product(), seed), dims, &Device::Cpu)
                .expect("shape fits");
        QTensor::quantize(&w, dtype).expect("quantizes")
    };
    let q8 = GgmlDType::Q8_0;
    let tensors = [
        ("token_embd.weight", t(&[n, dim], 1, q8)),
        ("output_norm.weight", t(&[dim], 2, GgmlDType::F32)),
        ("blk.0.attn_q.weight", t(&[dim, dim], 3, q8)),
        ("blk.0.attn_k.weight", t(&[16, dim], 4, q8)),
        ("blk.0.attn_v.weight", t(&[16, dim], 5, q8)),
        ("blk.0.attn_output.weight", t(&[dim, dim], 6, q8)),
        ("blk.0.ffn_gate.weight", t(&[hidden, dim], 7, q8)),
        ("blk.0.ffn_up.weight", t(&[hidden, dim], 8, q8)),
        ("blk.0.ffn_down.weight", t(&[dim, hidden], 9, GgmlDType::Q4_1)),
        ("blk.0.attn_norm.weight", t(&[dim], 10, GgmlDType::F32)),
        ("blk.0.ffn_norm.weight", t(&[dim], 11, GgmlDType::F32)),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &refs).expect("writes to memory");
    out.into_inner()
}
