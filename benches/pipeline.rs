//! `make bench`: the figures the README reports, measured on this machine in one run.
//!
//! - generator: prefill and decode tok/s on a ~500-token RAG prompt, for the shipped Q8_0 file and
//!   the published Q4_1 file it is derived from, and how often their greedy outputs agree;
//! - our Q8_0 kernel against candle's on the same matrix, one vector and 128 at once;
//! - embedder: embeddings/s for 128-token chunks;
//! - index: build time, search latency p50/p99 and recall@10 (HNSW against exact search) at 1k and
//!   10k chunks, and exact-scan latency at several sizes (the exact/HNSW crossover).
//!
//! Prints a readable report and, last, one JSON line with every figure.

use candle_core::quantized::GgmlDType;
use pocketrag::embed::Embedder;
use pocketrag::llm::llama::Weights;
use pocketrag::llm::{GenerateParams, Generator};
use pocketrag::models;
use pocketrag::rag::prompt::{rag_messages, PromptSource};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut report = serde_json::Map::new();
    let embedder = models::load_embedder(&dir).expect("embedder (run `make models`)");

    // `make bench ONLY=kernels,generation` (or `embedding`, `index`) times only those parts.
    let only = std::env::var("ONLY").ok().filter(|o| !o.is_empty());
    let wants = |part: &str| only.as_deref().is_none_or(|o| o.split(',').any(|p| p == part));
    if wants("kernels") {
        bench_kernels(&mut report);
    }
    if wants("generation") {
        bench_generators(&dir, &mut report);
    }
    if wants("embedding") {
        bench_embedder(&embedder, &mut report);
    }
    if wants("index") {
        bench_index(&embedder, &mut report);
    }
    println!("{}", serde_json::Value::Object(report));
}

/// Text for prompts and chunks: our own test documents, repeated as needed.
fn corpus() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/library");
    let mut s = String::new();
    for f in ["lighthouse.md", "sourdough.txt", "bicycle.html"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let doc = pocketrag::ingest::ingest(f, &bytes).unwrap();
        s.push_str(&doc.text);
        s.push_str("\n\n");
    }
    s
}

fn rag_prompt(g: &Generator, target_tokens: usize) -> Vec<u32> {
    rag_prompt_and_sources(g, target_tokens).0
}

/// The prompt, and the texts of its four sources.
fn rag_prompt_and_sources(g: &Generator, target_tokens: usize) -> (Vec<u32>, Vec<String>) {
    let text = corpus();
    let words: Vec<&str> = text.split_whitespace().collect();
    // Grow four sources until the rendered prompt reaches the target length.
    let mut n = 40;
    loop {
        let pieces: Vec<String> =
            (0..4).map(|i| words.iter().cycle().skip(i * 37).take(n).copied().collect::<Vec<_>>().join(" ")).collect();
        let sources: Vec<PromptSource> = pieces
            .iter()
            .enumerate()
            .map(|(i, t)| PromptSource { title: ["a.md", "b.txt", "c.html", "d.md"][i], text: t })
            .collect();
        let prompt = g.render_chat(&rag_messages("How do I find the hole in an inner tube?", &sources)).unwrap();
        let ids = g.encode(&prompt).unwrap();
        if ids.len() >= target_tokens {
            return (ids, pieces);
        }
        n += 5;
    }
}

fn speed(g: &mut Generator, ids: &[u32], decode: usize) -> (f64, f64) {
    let params = GenerateParams { max_tokens: decode, repeat_penalty: 1.0, ..Default::default() };
    // Decode speed counts the tokens actually produced (the model may stop early).
    let gen = g.generate(ids, &params, &mut |_| {}, &|| false).unwrap();
    let prefill = ids.len() as f64 / (gen.prefill_ms / 1000.0);
    let decode_tps = gen.tokens.len().saturating_sub(1).max(1) as f64 / (gen.decode_ms / 1000.0);
    (prefill, decode_tps)
}

fn bench_generators(dir: &Path, report: &mut serde_json::Map<String, serde_json::Value>) {
    let q8_path = models::generator_path(dir);
    let q4_path = dir.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut q8 = models::load_generator(&q8_path).unwrap();
    let mut q4 = models::load_generator(&q4_path).unwrap();
    let ids = rag_prompt(&q8, 500);
    println!("generator: RAG prompt of {} tokens, 64 decoded tokens, 1 run each", ids.len());
    let (p8, d8) = speed(&mut q8, &ids, 64);
    let (p4, d4) = speed(&mut q4, &ids, 64);
    let q8_bytes = std::fs::read(&q8_path).unwrap();
    let mut q8d = Generator::from_gguf_bytes_with(&q8_bytes, "q8_0", Weights::QuantizedAndDense).unwrap();
    drop(q8_bytes);
    let (pd, dd) = speed(&mut q8d, &ids, 64);
    drop(q8d);
    println!("  Q8_0 + f32 copy for prompts: prefill {pd:7.1} tok/s   decode {dd:6.1} tok/s ({:.2}x prefill)", pd / p8);
    report.insert("prefill_tok_s_q8_0_dense".into(), json!(pd));
    report.insert("decode_tok_s_q8_0_dense".into(), json!(dd));
    println!("  Q8_0 (shipped):   prefill {p8:7.1} tok/s   decode {d8:6.1} tok/s");
    println!("  Q4_1 (published): prefill {p4:7.1} tok/s   decode {d4:6.1} tok/s");
    println!("  Q8_0 / Q4_1:      prefill {:.2}x   decode {:.2}x", p8 / p4, d8 / d4);
    report.insert("prompt_tokens".into(), json!(ids.len()));
    report.insert("prefill_tok_s_q8_0".into(), json!(p8));
    report.insert("decode_tok_s_q8_0".into(), json!(d8));
    report.insert("prefill_tok_s_q4_1".into(), json!(p4));
    report.insert("decode_tok_s_q4_1".into(), json!(d4));

    // Quote-constrained decoding against free decoding, same prompt, same number of tokens: the
    // constraint masks the logits to the tokens that continue a copy of a source (or cite it).
    let (cids, texts) = rag_prompt_and_sources(&q8, 500);
    let free_params = GenerateParams { max_tokens: 48, repeat_penalty: 1.0, ..Default::default() };
    let decode_rate = |g: &mut Generator, constrained: bool| {
        let mut run = g.start(&cids, &free_params).unwrap();
        if constrained {
            let sources = texts.iter().map(|t| g.encode(t).unwrap()).collect();
            let cites = (1..=texts.len()).map(|n| g.encode(&format!(" [{n}]")).unwrap()).collect();
            let joiners = [",", " and", "."].iter().filter_map(|j| g.encode(j).unwrap().first().copied()).collect();
            run.constrain(Box::new(pocketrag::rag::constrain::QuoteConstraint::new(
                sources,
                cites,
                joiners,
                g.stop_ids().to_vec(),
                3,
            )));
        }
        let mut tokens = 0;
        loop {
            match g.step(&mut run).unwrap() {
                pocketrag::llm::Step::Token { .. } => tokens += 1,
                pocketrag::llm::Step::Done { .. } => break,
                _ => {}
            }
        }
        let gen = run.finish();
        (tokens.max(1) as f64 / (gen.decode_ms / 1000.0), gen.tokens.len())
    };
    // Alternating runs, the best of two each: the machine is shared and noisy.
    let (free_tps, free_n) = decode_rate(&mut q8, false);
    let (quote_a, quote_n) = decode_rate(&mut q8, true);
    let (free_tps2, _) = decode_rate(&mut q8, false);
    let (quote_b, _) = decode_rate(&mut q8, true);
    let free_best = free_tps.max(free_tps2);
    let quote_tps = quote_a.max(quote_b);
    println!(
        "  quote-constrained decoding: {quote_tps:6.1} tok/s ({quote_n} tokens) vs free {free_best:6.1} tok/s ({free_n} tokens): {:.3}x",
        quote_tps / free_best
    );
    report.insert("decode_tok_s_quote_constrained".into(), json!(quote_tps));
    report.insert("decode_tok_s_free".into(), json!(free_best));
    report.insert("quote_constrained_over_free".into(), json!(quote_tps / free_best));

    // Our fine-tune applied at load time (what the page does, so it can switch without a second
    // download) adds two thin products per adapted matrix; merged into the weights (`--tuned`) it
    // costs nothing.
    let adapter_path = dir.join(models::ADAPTER_FILE);
    let adapter = pocketrag::llm::lora::Adapter::from_bytes(&std::fs::read(&adapter_path).unwrap(), "adapter").unwrap();
    q8.set_adapter(Some(&adapter)).unwrap();
    let (pa, da) = speed(&mut q8, &ids, 64);
    q8.set_adapter(None).unwrap();
    let mut merged = models::load_generator(&dir.join(models::TUNED_GENERATOR_FILE)).unwrap();
    let (pm, dm) = speed(&mut merged, &ids, 64);
    drop(merged);
    println!(
        "  Q8_0 + LoRA applied at load: prefill {pa:7.1} tok/s   decode {da:6.1} tok/s ({:.2}x decode of Q8_0)",
        da / d8
    );
    println!(
        "  Q8_0 tuned (LoRA merged):    prefill {pm:7.1} tok/s   decode {dm:6.1} tok/s ({:.2}x decode of Q8_0)",
        dm / d8
    );
    report.insert("prefill_tok_s_q8_0_lora".into(), json!(pa));
    report.insert("decode_tok_s_q8_0_lora".into(), json!(da));
    report.insert("prefill_tok_s_q8_0_merged".into(), json!(pm));
    report.insert("decode_tok_s_q8_0_merged".into(), json!(dm));

    // Greedy agreement on a fixed prompt set. The reference is the Q4_1 weights dequantized to
    // f32 (exactly the published values, with no activation quantization); the Q4_1 kernel itself
    // rounds activations to 8 bits, so it is compared against the same reference.
    let q4_bytes = std::fs::read(&q4_path).unwrap();
    let f32_bytes = pocketrag::llm::quantize::requantize(&q4_bytes, "q4_1", GgmlDType::Q4_1, GgmlDType::F32).unwrap();
    let mut f32m = Generator::from_gguf_bytes(&f32_bytes, "f32").unwrap();
    drop(f32_bytes);
    let (pf, df) = speed(&mut f32m, &ids, 64);
    println!("  F32 (reference):  prefill {pf:7.1} tok/s   decode {df:6.1} tok/s");
    report.insert("prefill_tok_s_f32".into(), json!(pf));
    report.insert("decode_tok_s_f32".into(), json!(df));
    let prompts = [
        "What is a lighthouse for?",
        "Explain retrieval-augmented generation in one sentence.",
        "Write a haiku about bicycles.",
        "List three uses of flour.",
        "What is 12 times 7?",
        "Translate 'good morning' into French.",
        "Why is the sky blue?",
        "Give me a name for a sourdough starter.",
        "How do I patch a bicycle inner tube?",
        "Summarise the water cycle.",
        "What does a compiler do?",
        "Name a famous lighthouse.",
    ];
    let params = GenerateParams { max_tokens: 32, repeat_penalty: 1.0, ..Default::default() };
    let (mut prefix8, mut prefix4, mut same8, mut same4) = (vec![], vec![], 0, 0);
    for p in prompts {
        let chat = q8.render_chat(&[pocketrag::llm::Message::new("user", p)]).unwrap();
        let ids = q8.encode(&chat).unwrap();
        let reference = f32m.generate(&ids, &params, &mut |_| {}, &|| false).unwrap().tokens;
        for (model, prefixes, same) in [(&mut q8, &mut prefix8, &mut same8), (&mut q4, &mut prefix4, &mut same4)] {
            let out = model.generate(&ids, &params, &mut |_| {}, &|| false).unwrap().tokens;
            prefixes.push(out.iter().zip(&reference).take_while(|(x, y)| x == y).count());
            if out == reference {
                *same += 1;
            }
        }
    }
    let n = prompts.len();
    println!("  greedy output identical to the f32 reference over 32 tokens, {n} prompts:");
    println!("    Q8_0 {same8}/{n} (common prefixes {prefix8:?})");
    println!("    Q4_1 {same4}/{n} (common prefixes {prefix4:?})");
    report.insert("greedy_identical_q8_0".into(), json!(format!("{same8}/{n}")));
    report.insert("greedy_identical_q4_1".into(), json!(format!("{same4}/{n}")));
}

fn bench_kernels(report: &mut serde_json::Map<String, serde_json::Value>) {
    let f = pocketrag::bench::q8_kernel_figures().unwrap();
    println!("Q8_0 kernel, {}x{} matrix, ours vs candle's (µs per product):", f.rows, f.cols);
    println!(
        "  one vector:  {:8.1} vs {:8.1} ({:.2}x)",
        f.ours_matvec_us,
        f.candle_matvec_us,
        f.candle_matvec_us / f.ours_matvec_us
    );
    println!(
        "  128 vectors: {:8.1} vs {:8.1} ({:.2}x)",
        f.ours_matmul128_us,
        f.candle_matmul128_us,
        f.candle_matmul128_us / f.ours_matmul128_us
    );
    println!(
        "  128 vectors on plain buffers, 8-bit vs f32 weights (kernels::dense, the wasm build's f32 prompt kernel): {:8.1} vs {:8.1} ({:.2}x)",
        f.prompt_q8_us,
        f.prompt_f32_us,
        f.prompt_f32_us / f.prompt_q8_us
    );
    report.insert("q8_matvec_speedup".into(), json!(f.candle_matvec_us / f.ours_matvec_us));
    report.insert("q8_matmul128_speedup".into(), json!(f.candle_matmul128_us / f.ours_matmul128_us));
}

fn bench_embedder(embedder: &Embedder, report: &mut serde_json::Map<String, serde_json::Value>) {
    let chunks = pocketrag::bench::chunk_texts(embedder, &corpus(), 64);
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    embedder.embed(&refs[..8]).unwrap();
    let t = Instant::now();
    embedder.embed(&refs).unwrap();
    let per_s = refs.len() as f64 / t.elapsed().as_secs_f64();
    println!("embedder: {per_s:.1} embeddings/s (64 chunks of ~128 tokens, batched)");
    report.insert("embed_chunks_s".into(), json!(per_s));
}

fn bench_index(embedder: &Embedder, report: &mut serde_json::Map<String, serde_json::Value>) {
    use pocketrag::bench::{index_figures, index_figures_on, IndexFigures};
    use pocketrag::index::vector::HnswConfig;
    let print = |what: &str, f: &IndexFigures| {
        println!(
            "  {what} {:>6} chunks ({}): build {:8.1} ms; search p50 {:.3} ms p99 {:.3} ms, recall@10 {:.3}; exact p50 {:.3} ms p99 {:.3} ms",
            f.chunks, f.index, f.build_ms, f.search_p50_ms, f.search_p99_ms, f.recall10, f.exact_p50_ms, f.exact_p99_ms
        );
    };
    let mut record = |prefix: &str, f: &IndexFigures| {
        let key = format!("{prefix}{}k", f.chunks / 1000);
        report.insert(format!("hnsw_build_ms_{key}"), json!(f.build_ms));
        report.insert(format!("search_p50_ms_{key}"), json!(f.search_p50_ms));
        report.insert(format!("search_p99_ms_{key}"), json!(f.search_p99_ms));
        report.insert(format!("recall10_{key}"), json!(f.recall10));
        report.insert(format!("exact_p50_ms_{key}"), json!(f.exact_p50_ms));
        report.insert(format!("exact_p99_ms_{key}"), json!(f.exact_p99_ms));
    };
    // Real embeddings, through the product's own settings (`HnswConfig::default()`: no graph
    // below its size threshold). The text is the SQuAD and PubMedQA passages in ../shared, cut
    // into windows; the queries are 300 of their questions. At 10k the windows are 40 words and
    // do not overlap; 100k windows of that text exist only as 16 words every 4.
    let (words, questions) = shared_text();
    let questions: Vec<String> = questions.into_iter().step_by(37).take(300).collect();
    let queries = cached_vectors(embedder, "questions-300", &questions);
    println!("index: real MiniLM vectors of ../shared text windows, 300 of its questions, k = 10");
    let sets: [(&str, Vec<String>); 4] = [
        ("w40-2k", words.chunks(40).take(2_000).map(|c| c.join(" ")).collect()),
        ("w40-5k", words.chunks(40).take(5_000).map(|c| c.join(" ")).collect()),
        ("w40-10k", words.chunks(40).take(10_000).map(|c| c.join(" ")).collect()),
        ("w16s4-100k", (0..100_000).map(|i| words[i * 4..i * 4 + 16].join(" ")).collect()),
    ];
    for (name, texts) in sets {
        let data = cached_vectors(embedder, name, &texts);
        // 2k and 5k say where the graph starts to pay, so they are built whatever the threshold.
        let config = if data.len() < 10_000 {
            HnswConfig { exact_below: 0, ..Default::default() }
        } else {
            HnswConfig::default()
        };
        let f = index_figures_on(data, &queries, config);
        print("real", &f);
        record("real_", &f);
    }
    println!("index: synthetic clustered 384-d unit vectors, 200 queries, k = 10 (harder than real)");
    for n in [1_000usize, 10_000, 20_000] {
        let f = index_figures(n);
        print("synthetic", &f);
        record("", &f);
    }
}

/// Every word of the SQuAD and PubMedQA passages in ../shared, in order, and every question.
fn shared_text() -> (Vec<String>, Vec<String>) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(shared.join(f)).expect("../shared/data")).expect("JSON")
    };
    let (mut words, mut questions) = (vec![], vec![]);
    for f in
        ["squad/squad1-dev-13-articles.json", "squad/squad2-dev-16-articles.json", "squad/squadshifts-new-wiki.json"]
    {
        for article in read(f)["data"].as_array().expect("articles") {
            for p in article["paragraphs"].as_array().expect("paragraphs") {
                words.extend(p["context"].as_str().unwrap_or("").split_whitespace().map(String::from));
                questions.extend(
                    p["qas"].as_array().expect("qas").iter().map(|q| q["question"].as_str().unwrap_or("").to_string()),
                );
            }
        }
    }
    for entry in read("pubmedqa/pqal_train.json").as_object().expect("entries").values() {
        for c in entry["CONTEXTS"].as_array().expect("contexts") {
            words.extend(c.as_str().unwrap_or("").split_whitespace().map(String::from));
        }
        questions.push(entry["QUESTION"].as_str().unwrap_or("").to_string());
    }
    (words, questions)
}

/// The texts' embeddings, kept in target/bench-vectors so a second run does not embed 100k
/// windows again (about seven minutes on two cores). Delete that folder after changing the
/// embedder.
fn cached_vectors(embedder: &Embedder, name: &str, texts: &[String]) -> Vec<Vec<f32>> {
    let dim = 384;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-vectors");
    let path = dir.join(format!("{name}.f32"));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == texts.len() * dim * 4 {
            let all: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            return all.chunks(dim).map(<[f32]>::to_vec).collect();
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs).expect("embedding the benchmark's texts");
    std::fs::create_dir_all(&dir).expect("target/bench-vectors");
    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&path, bytes).expect("writing the benchmark's vectors");
    vectors
}
