//! all-MiniLM-L6-v2 on the CPU, written out: a 6-layer BERT encoder, then the mean of each text's
//! token vectors scaled to unit length. It computes what candle-transformers' `BertModel` does (and
//! `embed/gpu.rs` on the GPU), on plain slices of f32, so that in wasm the products run on our
//! kernel (`kernels::dense`) and GELU and softmax on `kernels::vecmath`. Profiled under Node, embedding
//! through candle spent 69% of its time in gemm, 9% in `expf` and 7% in `erff`, one number per
//! call. Natively the products go to the `gemm` crate that candle itself calls, on every core.
//!
//! Texts are packed end to end instead of padded to a common length: every position computed is
//! a real token, and attention stays within each text.
//!
//! embeddings (word + position + type) → layer_norm → per layer:
//!   q, k, v = x Wᵀ + b
//!   att = per text and head: softmax(q kᵀ / √d) v
//!   x = layer_norm(x + att W_oᵀ + b_o)
//!   x = layer_norm(x + gelu(x W_1ᵀ + b_1) W_2ᵀ + b_2)
//! → the mean of each text's positions → unit length.

use super::Precision;
use crate::error::{Error, Result};
use crate::kernels::int8::{self, Form, I8Rows};
use crate::kernels::vecmath;

/// The model's sizes, from its config.json.
#[derive(Debug, Clone, Copy)]
pub struct BertShape {
    pub layers: usize,
    pub heads: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub eps: f32,
}

/// `y = x Wᵀ + b`; W is outputs × inputs, as stored.
struct Linear {
    weight: Vec<f32>,
    /// W rounded to 8 bits (`Precision::Int8`): then the product is taken in integers.
    int8: Option<I8Rows>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Linear {
    /// W rounded as it is, for an input of unknown sizes.
    fn int8(&self, form: Form) -> I8Rows {
        I8Rows::quantize(&self.weight, self.inputs, form)
    }

    /// W rounded for an input that `norm` produces, whose few large columns (where its learned
    /// scale is) would leave the rest few steps: column c scaled by s_c = sqrt(x_c / max |W_·c|)
    /// (`I8Rows::quantize_scaled`), x_c = 4 |γ_c| + |β_c| the most the norm gives there but for
    /// rare values past 4 standard deviations, estimated from the weights, not measured.
    fn int8_after(&self, norm: &Norm, form: Form) -> I8Rows {
        let k = self.inputs;
        let columns: Vec<f32> = (0..k)
            .map(|c| {
                let x = 4.0 * norm.weight[c].abs() + norm.bias[c].abs();
                let w = self.weight.iter().skip(c).step_by(k).fold(0f32, |m, v| m.max(v.abs()));
                if x > 0.0 && w > 0.0 {
                    (x / w).sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        I8Rows::quantize_scaled(&self.weight, k, &columns, form)
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let outputs = self.bias.len();
        let mut y = vec![0f32; x.len() / self.inputs * outputs];
        match &self.int8 {
            Some(w) => int8::matmul_t(x, w, &mut y),
            None => product(x, &self.weight, self.inputs, &mut y),
        }
        for row in y.chunks_exact_mut(outputs) {
            row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
        }
        y
    }
}

/// Layer normalisation over each position's vector, with a learned scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    /// `x = layer_norm(x + residual)`, position by position.
    fn forward(&self, x: &mut [f32], residual: Option<&[f32]>) {
        let dim = self.weight.len();
        if let Some(r) = residual {
            x.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        for row in x.chunks_exact_mut(dim) {
            let mean = vecmath::sum(row) / dim as f32;
            row.iter_mut().for_each(|v| *v -= mean);
            let variance = vecmath::dot(row, row) / dim as f32;
            let scale = 1.0 / (variance + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = *v * scale * w + b;
            }
        }
    }
}

/// One encoder layer's parts, whatever holds their weights: `Linear` and `Norm` here, GPU
/// buffers in `embed/gpu.rs`.
pub(crate) struct Layer<L, N> {
    pub query: L,
    pub key: L,
    pub value: L,
    pub output: L,
    pub attention_norm: N,
    pub up: L,
    pub down: L,
    pub output_norm: N,
}

impl<L, N> Layer<L, N> {
    /// Layers `0..shape.layers`, each part made by `linear(name, outputs, inputs)` or
    /// `norm(name)` from its tensors' name, as sentence-transformers saves them (`name.weight`,
    /// `name.bias`).
    pub(crate) fn load_all(
        shape: BertShape,
        linear: impl Fn(&str, usize, usize) -> Result<L>,
        norm: impl Fn(&str) -> Result<N>,
    ) -> Result<Vec<Self>> {
        let (dim, inter) = (shape.hidden, shape.intermediate);
        (0..shape.layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Layer {
                    query: linear(&format!("{p}.attention.self.query"), dim, dim)?,
                    key: linear(&format!("{p}.attention.self.key"), dim, dim)?,
                    value: linear(&format!("{p}.attention.self.value"), dim, dim)?,
                    output: linear(&format!("{p}.attention.output.dense"), dim, dim)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    up: linear(&format!("{p}.intermediate.dense"), inter, dim)?,
                    down: linear(&format!("{p}.output.dense"), dim, inter)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect()
    }
}

pub struct Bert {
    shape: BertShape,
    /// Rows of `hidden` numbers: one per word piece, one per position.
    words: Vec<f32>,
    positions: Vec<f32>,
    /// The first token type's row: every position of a single text has type 0.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer<Linear, Norm>>,
}

impl Bert {
    /// The weights from the model's safetensors bytes (f32 as shipped, or f16 / bf16, read into
    /// f32; names without a `bert.` prefix, as sentence-transformers saves them).
    pub fn from_safetensors(bytes: &[u8], shape: BertShape) -> Result<Bert> {
        let bad = |what: String| Error::model("embedder model.safetensors", what);
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        // A tensor's numbers as f32 (from f32, f16 or bf16), after checking its shape where given.
        let read = |name: &str, dims: &[usize]| -> Result<(Vec<f32>, Vec<usize>)> {
            let t = file.tensor(name).map_err(|e| bad(format!("{name}: {e} (does the file match config.json?)")))?;
            if !dims.is_empty() && t.shape() != dims {
                return Err(bad(format!("{name} is {:?}, not {dims:?} as config.json says", t.shape())));
            }
            let numbers = match t.dtype() {
                safetensors::Dtype::F32 => {
                    t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
                }
                safetensors::Dtype::F16 => {
                    t.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
                }
                safetensors::Dtype::BF16 => {
                    t.data().chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
                }
                other => {
                    return Err(bad(format!("{name} holds {other:?} numbers; the embedder reads F32, F16 or BF16")))
                }
            };
            Ok((numbers, t.shape().to_vec()))
        };
        let (dim, inter) = (shape.hidden, shape.intermediate);
        let linear = |name: &str, outputs: usize, inputs: usize| -> Result<Linear> {
            Ok(Linear {
                weight: read(&format!("{name}.weight"), &[outputs, inputs])?.0,
                int8: None,
                bias: read(&format!("{name}.bias"), &[outputs])?.0,
                inputs,
            })
        };
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                weight: read(&format!("{name}.weight"), &[dim])?.0,
                bias: read(&format!("{name}.bias"), &[dim])?.0,
                eps: shape.eps,
            })
        };
        // A table of `dim`-long rows whose count the file decides (at least one).
        let table = |name: &str| -> Result<Vec<f32>> {
            let (numbers, dims) = read(name, &[])?;
            if dims.len() != 2 || dims[0] == 0 || dims[1] != dim {
                return Err(bad(format!("{name} is {dims:?}, not rows of {dim} as config.json says")));
            }
            Ok(numbers)
        };
        if dim == 0 || inter == 0 || shape.heads == 0 || dim % shape.heads != 0 {
            return Err(Error::model(
                "embedder config.json",
                format!("hidden size {dim} in {} heads, intermediate size {inter}: not a model", shape.heads),
            ));
        }
        let embedding_norm = norm("embeddings.LayerNorm")?;
        let layers = Layer::load_all(shape, linear, norm)?;
        let mut token_type = table("embeddings.token_type_embeddings.weight")?;
        token_type.truncate(dim);
        Ok(Bert {
            shape,
            words: table("embeddings.word_embeddings.weight")?,
            positions: table("embeddings.position_embeddings.weight")?,
            token_type,
            embedding_norm,
            layers,
        })
    }

    /// Take the encoder's products in `precision` from now on, 8-bit ones in `form` (tests take
    /// the relaxed build's natively). The f32 weights are kept; 8-bit copies add at most half.
    pub fn set_precision(&mut self, precision: Precision, form: Form) {
        let int8 = precision == Precision::Int8;
        let mut input_norm = &self.embedding_norm;
        for layer in &mut self.layers {
            // Q, K, V read the previous norm, the MLP's first product the attention norm.
            for linear in [&mut layer.query, &mut layer.key, &mut layer.value] {
                linear.int8 = int8.then(|| linear.int8_after(input_norm, form));
            }
            layer.up.int8 = int8.then(|| layer.up.int8_after(&layer.attention_norm, form));
            for linear in [&mut layer.output, &mut layer.down] {
                linear.int8 = int8.then(|| linear.int8(form));
            }
            input_norm = &layer.output_norm;
        }
    }

    pub fn precision(&self) -> Precision {
        if self.layers.first().is_some_and(|l| l.query.int8.is_some()) {
            Precision::Int8
        } else {
            Precision::F32
        }
    }

    pub fn shape(&self) -> BertShape {
        self.shape
    }

    /// The most tokens one text may have (the position table's length).
    pub fn max_len(&self) -> usize {
        self.positions.len() / self.shape.hidden
    }

    /// One unit vector per text, each given as its token ids ([CLS] … [SEP], no padding).
    pub fn forward(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let dim = self.shape.hidden;
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        if let Some(&len) = lens.iter().find(|&&l| l == 0 || l > self.max_len()) {
            return Err(Error::Input(format!("the embedder takes 1 to {} tokens per text, not {len}", self.max_len())));
        }
        let mut x = Vec::with_capacity(lens.iter().sum::<usize>() * dim);
        for ids in texts {
            for (p, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.words.len() / dim {
                    return Err(Error::model(
                        "embedder tokenizer.json",
                        format!("token id {id} is outside the model's vocabulary of {}", self.words.len() / dim),
                    ));
                }
                let word = &self.words[id * dim..][..dim];
                let position = &self.positions[p * dim..][..dim];
                x.extend(word.iter().zip(&self.token_type).zip(position).map(|((w, t), p)| w + t + p));
            }
        }
        self.embedding_norm.forward(&mut x, None);
        for layer in &self.layers {
            let (q, k, v) = (layer.query.forward(&x), layer.key.forward(&x), layer.value.forward(&x));
            let attended = attention(&q, &k, &v, &lens, dim, self.shape.heads);
            layer.attention_norm.forward(&mut x, Some(&layer.output.forward(&attended)));
            let mut h = layer.up.forward(&x);
            vecmath::gelu_in_place(&mut h);
            layer.output_norm.forward(&mut x, Some(&layer.down.forward(&h)));
        }
        let mut rows = x.chunks_exact(dim);
        Ok(lens
            .iter()
            .map(|&len| {
                let mut sum = vec![0f32; dim];
                for row in rows.by_ref().take(len) {
                    sum.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                }
                // The mean's direction is the sum's.
                unit_length(&sum)
            })
            .collect())
    }
}

/// `v` scaled to length 1, so that a dot product of two is their cosine (the zero vector stays
/// zero). Both the CPU's and the GPU's pooled vectors end here.
pub(crate) fn unit_length(v: &[f32]) -> Vec<f32> {
    let norm = vecmath::dot(v, v).sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// Self-attention within each text (`lens`: the texts' lengths, packed end to end in q, k, v),
/// head by head: softmax(q kᵀ / √d) v.
fn attention(q: &[f32], k: &[f32], v: &[f32], lens: &[usize], dim: usize, heads: usize) -> Vec<f32> {
    let d = dim / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let mut start = 0;
    for &len in lens {
        // The weights' rows are padded with zeros to a multiple of four, the product kernel's
        // step; the zeros add nothing to the weighted sum of values.
        let wide = len.next_multiple_of(4);
        // This text's rows of one head's columns, one after another.
        let head = |t: &[f32], h: usize| -> Vec<f32> {
            let mut rows = Vec::with_capacity(len * d);
            for p in start..start + len {
                rows.extend_from_slice(&t[p * dim + h * d..][..d]);
            }
            rows
        };
        for h in 0..heads {
            let mut scores = vec![0f32; len * len];
            product(&head(q, h), &head(k, h), d, &mut scores);
            let mut weights = vec![0f32; len * wide];
            for (w, s) in weights.chunks_exact_mut(wide).zip(scores.chunks_exact(len)) {
                w[..len].iter_mut().zip(s).for_each(|(w, s)| *w = s * scale);
                vecmath::softmax_in_place(&mut w[..len]);
            }
            // vᵀ: the values of each of the head's d columns along the positions.
            let mut values = vec![0f32; d * wide];
            for (i, row) in head(v, h).chunks_exact(d).enumerate() {
                row.iter().enumerate().for_each(|(c, &x)| values[c * wide + i] = x);
            }
            let mut y = vec![0f32; len * d];
            product(&weights, &values, wide, &mut y);
            for (p, row) in y.chunks_exact(d).enumerate() {
                out[(start + p) * dim + h * d..][..d].copy_from_slice(row);
            }
        }
        start += len;
    }
    out
}

/// `out = x Wᵀ` (x: positions × k, W: outputs × k, out: positions × outputs). In wasm our
/// kernel, on at most `SLICE` positions at a time: it walks every position for each block of
/// W's rows, so the positions should stay in cache (128 × 1536 numbers is 786 KB).
#[cfg(target_arch = "wasm32")]
fn product(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    const SLICE: usize = 128;
    let outputs = w.len() / k;
    for (xs, ys) in x.chunks(SLICE * k).zip(out.chunks_mut(SLICE * outputs)) {
        crate::kernels::dense::matmul_t(xs, w, k, ys);
    }
}

/// Natively: the `gemm` crate's kernels (AVX2 and FMA where the CPU has them, every core), which
/// read Wᵀ through strides.
#[cfg(not(target_arch = "wasm32"))]
fn product(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let (n, m) = (x.len() / k, w.len() / k);
    assert!(x.len() == n * k && w.len() == m * k && out.len() == n * m, "product shapes");
    // SAFETY: the assert above: x is n × k and W m × k (both row-major), out n × m; the strides
    // below stay inside them. Wᵀ's element (row c, column j) is w[j k + c].
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{serialize, tensor::TensorView, Dtype};

    const SHAPE: BertShape = BertShape { layers: 1, heads: 2, hidden: 8, intermediate: 16, eps: 1e-12 };

    /// A tiny BERT's safetensors file, numbers pseudo-random, every tensor in `dtype`, and
    /// `skip` left out.
    fn tiny_model(dtype: Dtype, skip: &str) -> Vec<u8> {
        let (d, i) = (SHAPE.hidden, SHAPE.intermediate);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![10, d]),
            ("embeddings.position_embeddings.weight".into(), vec![6, d]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, d]),
        ];
        let p = "encoder.layer.0";
        for (name, out, inp) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", i, d),
            ("output.dense", d, i),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for norm in [
            "embeddings.LayerNorm".to_string(),
            format!("{p}.attention.output.LayerNorm"),
            format!("{p}.output.LayerNorm"),
        ] {
            shapes.push((format!("{norm}.weight"), vec![d]));
            shapes.push((format!("{norm}.bias"), vec![d]));
        }
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
            .into_iter()
            .filter(|(name, _)| name != skip)
            .enumerate()
            .map(|(seed, (name, dims))| {
                let numbers = crate::kernels::random::pseudo_random(dims.iter().product(), seed as u64 + 1);
                let bytes = match dtype {
                    Dtype::F16 => numbers.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => numbers.iter().flat_map(|v| v.to_le_bytes()).collect(),
                };
                (name, dims, bytes)
            })
            .collect();
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(name, dims, bytes)| (name.clone(), TensorView::new(dtype, dims.clone(), bytes).unwrap()))
            .collect();
        serialize(views, None).unwrap()
    }

    #[test]
    fn packed_texts_give_the_vectors_they_give_alone() {
        let bert = Bert::from_safetensors(&tiny_model(Dtype::F32, ""), SHAPE).unwrap();
        let texts: [&[u32]; 3] = [&[1, 4, 2], &[1, 7, 9, 3, 5, 2], &[3]];
        let together = bert.forward(&texts).unwrap();
        for (text, packed) in texts.iter().zip(&together) {
            let alone = bert.forward(&[text]).unwrap().remove(0);
            assert!((vecmath::dot(packed, packed) - 1.0).abs() < 1e-5, "unit length");
            for (a, b) in packed.iter().zip(&alone) {
                assert!((a - b).abs() < 1e-6, "{packed:?} vs {alone:?}");
            }
        }
        // Half-precision files load too, to the same model within f16's rounding.
        let half = Bert::from_safetensors(&tiny_model(Dtype::F16, ""), SHAPE).unwrap();
        let v = half.forward(&texts[..1]).unwrap().remove(0);
        assert!(vecmath::dot(&v, &together[0]) > 0.999);
    }

    #[test]
    fn bad_files_and_ids_are_errors_that_say_what_is_wrong() {
        let missing = Bert::from_safetensors(&tiny_model(Dtype::F32, "encoder.layer.0.output.dense.bias"), SHAPE);
        assert!(missing.err().unwrap().to_string().contains("encoder.layer.0.output.dense.bias"));
        let wrong = BertShape { intermediate: 12, ..SHAPE };
        let err = Bert::from_safetensors(&tiny_model(Dtype::F32, ""), wrong).err().unwrap().to_string();
        assert!(err.contains("intermediate.dense.weight") && err.contains("config.json"), "{err}");
        let err = Bert::from_safetensors(b"junk", SHAPE).err().unwrap().to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
        let bert = Bert::from_safetensors(&tiny_model(Dtype::F32, ""), SHAPE).unwrap();
        let err = bert.forward(&[&[1, 10]]).unwrap_err().to_string();
        assert!(err.contains("token id 10") && err.contains("vocabulary of 10"), "{err}");
        let too_long = [1u32; 7];
        assert!(bert.forward(&[&too_long]).unwrap_err().to_string().contains("1 to 6 tokens"));
        assert!(bert.forward(&[&[]]).is_err());
    }
}
