//! Whether a GGUF file's model can be run, checked before a weight is read: its shape from the
//! metadata, and every matrix's shape against it. A crafted or damaged file is refused with the
//! reason instead of dividing by zero or slicing out of bounds in the forward pass.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::GgmlDType;
use std::io::Cursor;

/// Why a model's shape from its metadata cannot be run, if it cannot: every later division and
/// slice in this file relies on these.
pub(crate) fn shape_error(
    n_head: usize,
    n_kv_head: usize,
    n_layer: usize,
    dim: usize,
    rope_dim: usize,
    eps: f32,
    rope_base: f32,
) -> Option<String> {
    let problem = if n_head == 0 || n_kv_head == 0 || n_layer == 0 || dim == 0 {
        "a head count, the layer count or the embedding length is 0"
    } else if !n_head.is_multiple_of(n_kv_head) {
        "the head count is not a multiple of the key/value head count"
    } else if !dim.is_multiple_of(n_head) {
        "the embedding length is not a multiple of the head count"
    } else if rope_dim != dim / n_head || !rope_dim.is_multiple_of(2) {
        // The rotary tables and their use assume that every dimension of a head turns.
        "the rotary dimension is not the head size (partial rotary embeddings are not supported), or is odd"
    } else if ![eps, rope_base].iter().all(|v| v.is_finite() && *v > 0.0) {
        "the norm epsilon or the rotary base is not a positive number"
    } else {
        return None;
    };
    Some(format!(
        "unusable model shape: {problem} (heads {n_head}, key/value heads {n_kv_head}, layers {n_layer}, \
         embedding {dim}, rotary dimension {rope_dim})"
    ))
}

/// Why the weight matrices do not have the shapes the metadata implies, if they do not: every
/// product and slice of the forward pass takes its sizes from the metadata. Checked from the
/// file's table of tensors, before any is read; a missing tensor is reported when it is read.
pub(crate) fn tensor_shape_error(
    ct: &Content,
    n_layer: usize,
    dim: usize,
    n_head: usize,
    n_kv_head: usize,
) -> Option<String> {
    let shape = |name: &str| ct.tensor_infos.get(name).map(|t| t.shape.dims().to_vec());
    let kv = n_kv_head * (dim / n_head);
    let vocab = shape("token_embd.weight").and_then(|d| (d.len() == 2 && d[1] == dim).then_some(d[0]));
    let Some(vocab) = vocab.filter(|&v| v > 0) else {
        return Some(format!("token_embd.weight is {:?}, not (vocabulary, {dim})", shape("token_embd.weight")));
    };
    let mut want: Vec<(String, Vec<usize>)> =
        vec![("output.weight".into(), vec![vocab, dim]), ("output_norm.weight".into(), vec![dim])];
    for i in 0..n_layer {
        let hidden = shape(&format!("blk.{i}.ffn_gate.weight")).map_or(0, |d| d[0]);
        if hidden == 0 {
            return Some(format!("blk.{i}.ffn_gate.weight has no rows"));
        }
        for (name, dims) in [
            ("attn_q", vec![dim, dim]),
            ("attn_k", vec![kv, dim]),
            ("attn_v", vec![kv, dim]),
            ("attn_output", vec![dim, dim]),
            ("ffn_gate", vec![hidden, dim]),
            ("ffn_up", vec![hidden, dim]),
            ("ffn_down", vec![dim, hidden]),
            ("attn_norm", vec![dim]),
            ("ffn_norm", vec![dim]),
        ] {
            want.push((format!("blk.{i}.{name}.weight"), dims));
        }
    }
    want.push(("token_embd.weight".into(), vec![vocab, dim]));
    want.into_iter().find_map(|(name, dims)| match shape(&name) {
        Some(have) if have != dims => Some(format!("{name} is {have:?}, the model's shape needs {dims:?}")),
        Some(have) if have.len() == 2 => row_blocks_error(&name, ct.tensor_infos[&name].ggml_dtype, have[1]),
        _ => None,
    })
}

/// A quantized matrix's rows must be whole blocks: candle's products walk a row block by block,
/// and for Q4_1, Q5_0 and Q5_1 two blocks at a time (llama.cpp's layout). Every real model's rows
/// are; a crafted file's need not be.
pub(crate) fn row_blocks_error(name: &str, dtype: GgmlDType, cols: usize) -> Option<String> {
    let pairs = matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let multiple = dtype.block_size() * if pairs { 2 } else { 1 };
    (cols % multiple != 0).then(|| {
        format!("{name} is {dtype:?} with rows of {cols} values; that type's products need a multiple of {multiple}")
    })
}

pub(super) fn meta_str(ct: &Content, key: &str) -> Option<String> {
    ct.metadata.get(key).and_then(|v| v.to_string().ok()).cloned()
}

/// A truncated download still has a valid header; without this check it would fail deep inside
/// weight loading with an error that names no file.
fn check_complete(ct: &Content, len: u64, file: &str) -> Result<()> {
    let mut needed = ct.tensor_data_offset;
    for (name, info) in &ct.tensor_infos {
        let dtype = info.ggml_dtype;
        // Shapes and offsets are read from the file: a crafted one overflows a plain product.
        let too_big = || Error::model(file, format!("tensor {name} is larger than any file can hold"));
        let elems = info.shape.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_big)?;
        if elems % dtype.block_size() != 0 {
            return Err(Error::model(file, format!("tensor {name} has a shape that does not fit its type")));
        }
        let bytes = (elems / dtype.block_size()).checked_mul(dtype.type_size()).ok_or_else(too_big)? as u64;
        let end =
            ct.tensor_data_offset.checked_add(info.offset).and_then(|o| o.checked_add(bytes)).ok_or_else(too_big)?;
        needed = needed.max(end);
    }
    if needed > len {
        return Err(Error::model(
            file,
            format!("file is truncated: it has {len} bytes but its tensors need {needed} (download it again)"),
        ));
    }
    Ok(())
}

/// Read just the GGUF header (for tools that rewrite the file).
pub(crate) fn read_header(bytes: &[u8], file: &str) -> Result<Content> {
    let ct = gguf_file::Content::read(&mut Cursor::new(bytes))
        .map_err(|e| Error::model(file, format!("not a readable GGUF file ({e})")))?;
    check_complete(&ct, bytes.len() as u64, file)?;
    Ok(ct)
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    /// A GGUF whose metadata gives a shape the forward pass cannot run (a zero head count, a
    /// rotary dimension other than the head size) is refused with the reason when it loads,
    /// instead of dividing by zero or slicing out of bounds later.
    #[test]
    fn a_model_whose_shape_cannot_run_is_refused() {
        use candle_core::quantized::gguf_file::{self, Value};
        let (_, header) = crate::llm::tiny::tiny_with_header();
        // Metadata only: the shape is checked before any tensor is read.
        let with = |key: &str, value: u32| {
            let mut md: Vec<(String, Value)> = header.metadata.clone().into_iter().collect();
            md.retain(|(k, _)| k != key);
            md.push((key.to_string(), Value::U32(value)));
            let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &md, &[]).unwrap();
            let err = crate::llm::Generator::from_gguf_bytes(out.get_ref(), "crafted.gguf").err().unwrap();
            err.to_string()
        };
        for (key, value) in [
            ("llama.attention.head_count", 0),
            ("llama.attention.head_count_kv", 0),
            ("llama.attention.head_count", 7),
            ("llama.attention.head_count_kv", 5),
            ("llama.rope.dimension_count", 32),
            ("llama.rope.dimension_count", 4096),
            ("llama.block_count", 0),
        ] {
            let err = with(key, value);
            assert!(err.contains("crafted.gguf") && err.contains("unusable model shape"), "{key} = {value}: {err}");
        }
        // The real shape passes the check and fails only for want of tensors.
        let head = header.metadata["llama.attention.head_count"].to_u32().unwrap();
        let err = with("llama.attention.head_count", head);
        assert!(!err.contains("unusable model shape"), "{err}");
    }

    /// A tiny model whose metadata is sound and whose weights follow it loads and generates; one
    /// whose matrix does not fit the metadata is refused at load, naming the matrix, instead of
    /// panicking in the first product.
    #[test]
    fn a_model_whose_weights_do_not_fit_its_metadata_is_refused() {
        use candle_core::quantized::{gguf_file, QTensor};
        let (_, header) = crate::llm::tiny::tiny_with_header();
        let vocab = header.tensor_infos["token_embd.weight"].shape.dims()[0];
        let (dim, hidden) = (8usize, 16usize);
        let mut md: Vec<(String, gguf_file::Value)> = header.metadata.clone().into_iter().collect();
        for (key, value) in [
            ("llama.attention.head_count", 2),
            ("llama.attention.head_count_kv", 1),
            ("llama.block_count", 1),
            ("llama.embedding_length", dim as u32),
            ("llama.rope.dimension_count", 4),
        ] {
            md.retain(|(k, _)| k != key);
            md.push((key.to_string(), gguf_file::Value::U32(value)));
        }
        let md: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let write = |q_rows: usize| {
            let t = |dims: &[usize], seed: u64| {
                let n = dims.iter().product();
                let w = Tensor::from_vec(crate::kernels::random::pseudo_random(n, seed), dims, &Device::Cpu).unwrap();
                QTensor::quantize(&w, GgmlDType::F32).unwrap()
            };
            let tensors = [
                ("token_embd.weight", t(&[vocab, dim], 1)),
                ("output_norm.weight", t(&[dim], 2)),
                ("blk.0.attn_q.weight", t(&[q_rows, dim], 3)),
                ("blk.0.attn_k.weight", t(&[4, dim], 4)),
                ("blk.0.attn_v.weight", t(&[4, dim], 5)),
                ("blk.0.attn_output.weight", t(&[dim, dim], 6)),
                ("blk.0.ffn_gate.weight", t(&[hidden, dim], 7)),
                ("blk.0.ffn_up.weight", t(&[hidden, dim], 8)),
                ("blk.0.ffn_down.weight", t(&[dim, hidden], 9)),
                ("blk.0.attn_norm.weight", t(&[dim], 10)),
                ("blk.0.ffn_norm.weight", t(&[dim], 11)),
            ];
            let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &md, &refs).unwrap();
            out.into_inner()
        };
        let mut good = crate::llm::Generator::from_gguf_bytes(&write(dim), "tiny.gguf").unwrap();
        let params = crate::llm::GenerateParams { max_tokens: 3, ..Default::default() };
        let prompt = good.encode("Hello, tiny model").unwrap();
        let out = good.generate(&prompt, &params, &mut |_| {}, &|| false).unwrap();
        assert!(out.tokens.len() <= 3 && out.prompt_tokens == prompt.len(), "{out:?}");
        let err = crate::llm::Generator::from_gguf_bytes(&write(dim - 2), "tiny.gguf").err().unwrap().to_string();
        assert!(err.contains("tiny.gguf") && err.contains("blk.0.attn_q.weight is [6, 8]"), "{err}");
    }
}
