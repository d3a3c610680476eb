//! Measurements shared by the two benchmark front ends: `make bench` (native, benches/pipeline.rs)
//! and `make bench-web` (the same code compiled to wasm, run inside Chromium). Keeping the
//! workloads here means the two report the same thing.

use crate::embed::Embedder;
use crate::index::vector::{HnswConfig, VectorIndex};
use crate::kernels::random::pseudo_random;
use crate::time::Stopwatch;
use serde::Serialize;

/// Clustered unit vectors: real embeddings are not uniform on the sphere, they bunch by topic.
pub fn synthetic_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..64).map(|_| (0..dim).map(|_| rnd()).collect()).collect();
    (0..n)
        .map(|i| {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|x| x + 0.8 * rnd()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexFigures {
    pub chunks: usize,
    /// Which index answered the timed searches ("hnsw" or "exact").
    pub index: &'static str,
    pub build_ms: f64,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    /// Share of the exact top 10 that the graph search finds.
    pub recall10: f64,
    pub exact_p50_ms: f64,
    pub exact_p99_ms: f64,
}

/// Build a graph over `n` synthetic 384-d vectors and time 200 top-10 queries through it and by
/// exact scan. The graph is built whatever the size (the app scans small sets exactly), so both
/// methods are measured at every size. Synthetic vectors are harder for the graph than real
/// embeddings (their noise fills all 384 dimensions); `make bench` also measures real ones.
pub fn index_figures(n: usize) -> IndexFigures {
    let data = synthetic_vectors(n, 384, 7 + n as u64);
    let queries = synthetic_vectors(200, 384, 99 + n as u64);
    index_figures_on(data, &queries, HnswConfig { exact_below: 0, ..Default::default() })
}

/// The graph's build time, search time and recall@10 against an exact scan of the same vectors,
/// with `config` deciding (as in the product) whether there is a graph at all.
pub fn index_figures_on(data: Vec<Vec<f32>>, queries: &[Vec<f32>], config: HnswConfig) -> IndexFigures {
    let n = data.len();
    let mut idx = VectorIndex::new(config);
    for v in data {
        idx.push(v);
    }
    let clock = Stopwatch::start();
    idx.maintain();
    let build_ms = clock.ms();
    let (mut graph_ms, mut exact_ms, mut found) = (vec![], vec![], 0);
    for q in queries {
        let clock = Stopwatch::start();
        let approx = idx.search(q, 10);
        graph_ms.push(clock.ms());
        let clock = Stopwatch::start();
        let exact = idx.exact(q, 10, 0);
        exact_ms.push(clock.ms());
        found += approx.iter().filter(|a| exact.iter().any(|e| e.0 == a.0)).count();
    }
    IndexFigures {
        chunks: n,
        index: idx.kind(),
        build_ms,
        search_p50_ms: percentile(&mut graph_ms, 0.5),
        search_p99_ms: percentile(&mut graph_ms, 0.99),
        recall10: found as f64 / (queries.len() * 10) as f64,
        exact_p50_ms: percentile(&mut exact_ms, 0.5),
        exact_p99_ms: percentile(&mut exact_ms, 0.99),
    }
}

/// `n` different chunk texts of about 128 word pieces each (the chunker's maximum), cut from
/// `corpus`.
pub fn chunk_texts(embedder: &Embedder, corpus: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = corpus.split_whitespace().collect();
    assert!(words.len() > 200, "the corpus is too small to cut 128-token chunks from");
    (0..n)
        .map(|i| {
            let mut take = 60;
            loop {
                let s = words.iter().cycle().skip(i * 11).take(take).copied().collect::<Vec<_>>().join(" ");
                if embedder.count_tokens(&s) >= 126 {
                    return s;
                }
                take += 2;
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelFigures {
    /// The matrix: (rows, cols), the shape of one of SmolLM2's MLP projections.
    pub rows: usize,
    pub cols: usize,
    /// One vector (a decode step's product), microseconds per product.
    pub ours_matvec_us: f64,
    pub candle_matvec_us: f64,
    /// 128 vectors at once (a slice of a prompt read with the 8-bit weights only).
    pub ours_matmul128_us: f64,
    pub candle_matmul128_us: f64,
    /// 128 vectors on plain buffers, as a prompt is read: with the 8-bit weights (`kernels::q8`)
    /// and with an f32 copy of them (`kernels::dense`).
    pub prompt_q8_us: f64,
    pub prompt_f32_us: f64,
}

/// Microseconds per call of `f`: the median of 7 rounds, a round being as many calls as fill
/// ~50 ms.
fn time_us(f: &mut dyn FnMut()) -> f64 {
    f();
    let clock = Stopwatch::start();
    let mut reps = 0;
    while clock.ms() < 20.0 {
        f();
        reps += 1;
    }
    let reps = (reps * 50 / 20).max(1);
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let clock = Stopwatch::start();
            for _ in 0..reps {
                f();
            }
            clock.ms() * 1000.0 / reps as f64
        })
        .collect();
    percentile(&mut rounds, 0.5)
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedKernelFigures {
    /// Positions × inputs × outputs of each product timed: the embedder's two shapes, for a
    /// 128-token chunk.
    pub shapes: Vec<[usize; 3]>,
    /// Microseconds for all of them, f32 (`kernels::dense`) and 8-bit (`kernels::int8`).
    pub f32_us: f64,
    pub int8_us: f64,
    /// How 8-bit bytes' products were added up (`kernels::int8::bytes_kernel`).
    pub bytes_kernel: &'static str,
}

/// The embedder's products in f32 and in 8 bits, on one thread, on the same inputs.
pub fn embed_kernel_figures() -> EmbedKernelFigures {
    use crate::kernels::{dense, int8};
    let shapes = vec![[128, 384, 1536], [128, 1536, 384]];
    let (mut f32_us, mut int8_us) = (0.0, 0.0);
    for &[n, k, m] in &shapes {
        let x = pseudo_random(n * k, 1);
        let w = pseudo_random(m * k, 2);
        let q = int8::I8Rows::quantize(&w, k, int8::Form::FASTEST);
        let mut out = vec![0f32; n * m];
        f32_us += time_us(&mut || dense::matmul_t(&x, &w, k, &mut out));
        int8_us += time_us(&mut || int8::matmul_t(&x, &q, &mut out));
    }
    EmbedKernelFigures { shapes, f32_us, int8_us, bytes_kernel: int8::bytes_kernel() }
}

/// Our Q8_0 kernel (`kernels::q8`) against candle's on the same quantized matrix and inputs, each
/// figure from `time_us`.
pub fn q8_kernel_figures() -> crate::error::Result<KernelFigures> {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    let (rows, cols) = (1536, 576);
    let values = pseudo_random;
    let w = Tensor::from_vec(values(rows * cols, 1), (rows, cols), &Device::Cpu)?;
    let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
    let ours = crate::kernels::q8::Q8Matrix::from_qtensor(&q)?.expect("a Q8_0 matrix");
    let dense_w = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let theirs = QMatMul::from_qtensor(q)?;
    let mut figures = [0.0; 4];
    for (i, n) in [1usize, 128].into_iter().enumerate() {
        let x = Tensor::from_vec(values(n * cols, 2 + n as u64), (1, n, cols), &Device::Cpu)?;
        figures[2 * i] = time_us(&mut || drop(ours.forward(&x).expect("our product")));
        figures[2 * i + 1] = time_us(&mut || drop(theirs.forward(&x).expect("candle's product")));
    }
    let x = values(128 * cols, 130);
    let mut out = vec![0f32; 128 * rows];
    let prompt_q8_us = time_us(&mut || ours.matmul(&x, &mut out));
    let prompt_f32_us = time_us(&mut || crate::kernels::dense::matmul_t(&x, &dense_w, cols, &mut out));
    Ok(KernelFigures {
        prompt_q8_us,
        prompt_f32_us,
        rows,
        cols,
        ours_matvec_us: figures[0],
        candle_matvec_us: figures[1],
        ours_matmul128_us: figures[2],
        candle_matmul128_us: figures[3],
    })
}
