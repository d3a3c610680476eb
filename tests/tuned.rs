//! The adapter we ship, on the real model: it was made from the generator we ship, and the tuned
//! GGUF that `make models` merges from it computes what the adapter applied at load time computes,
//! up to re-quantizing the merged weights to Q8_0.

mod common;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use pocketrag::llm::llama::{Llama, Weights};
use pocketrag::llm::lora::Adapter;
use pocketrag::models;
use std::io::Cursor;

fn load(path: &std::path::Path) -> (Vec<u8>, Llama) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{} ({e}; run `make models`)", path.display()));
    let ct = gguf_file::Content::read(&mut Cursor::new(&bytes)).unwrap();
    let model = Llama::from_gguf(&ct, &mut Cursor::new(&bytes), Weights::Quantized, &Device::Cpu).unwrap();
    (bytes, model)
}

fn shipped_adapter() -> Adapter {
    let path = common::models_dir().join(models::ADAPTER_FILE);
    Adapter::from_bytes(&std::fs::read(&path).unwrap(), &path.display().to_string()).unwrap()
}

fn logits(model: &mut Llama, tokens: &[u32], pos: usize) -> Vec<f32> {
    let input = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input, pos).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

#[test]
fn the_shipped_adapter_was_made_from_the_shipped_generator() {
    let adapter = shipped_adapter();
    let base = std::fs::read(models::generator_path(&common::models_dir())).unwrap();
    assert_eq!(adapter.info["base_sha256"], models::sha256_hex(&base));
    assert_eq!(adapter.info["holdout_fold"], "none");
    assert_eq!(adapter.pairs.len(), 30 * 7);
}

#[test]
fn the_merged_tuned_model_agrees_with_the_adapter_applied_at_load_time() {
    let dir = common::models_dir();
    let (_, mut unmerged) = load(&models::generator_path(&dir));
    unmerged.set_adapter(Some(&shipped_adapter())).unwrap();
    let (_, mut merged) = load(&dir.join(models::TUNED_GENERATOR_FILE));
    let (_, mut base) = load(&models::generator_path(&dir));
    let prompt = {
        let g = common::shared_generator().lock().unwrap();
        let chat = g
            .render_chat(&[pocketrag::llm::Message::new(
                "user",
                "Sources:\n[1] notes.md\nThe Harrow Point lighthouse was first lit in 1871.\n\nQuestion: When was the lighthouse first lit?",
            )])
            .unwrap();
        g.encode(&chat).unwrap()
    };
    let (mut a, mut b, c) =
        (logits(&mut unmerged, &prompt, 0), logits(&mut merged, &prompt, 0), logits(&mut base, &prompt, 0));
    let diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    let probs = |x: &[f32]| {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect::<Vec<f32>>()
    };
    // Merging rounds every adapted matrix to Q8_0 once more. That must leave the adapter's own
    // change standing out from the rounding: measured, merging moved the next token's
    // probabilities by 0.042 at most, the adapter by 0.109. (This once compared merging with the
    // base Q8_0 file against its dequantized f32 weights, 0.027 then; that difference was the
    // rounding of the products' inputs to 8 bits, and with 14–15 bits it is next to nothing, so it
    // is no yardstick for a rounding of the weights.)
    let (rounding, effect) = (diff(&probs(&a), &probs(&b)), diff(&probs(&a), &probs(&c)));
    eprintln!("probability change: merging {rounding}, the adapter {effect}");
    assert!(rounding < 0.5 * effect, "merging moves probabilities by {rounding}, the adapter by {effect}");
    // ... and the two pick the same next token nearly always. Both are fed the unmerged model's
    // greedy continuation, so one near-tie going the other way does not end the comparison.
    let (mut pos, mut same, steps) = (prompt.len(), 0, 32);
    for _ in 0..steps {
        let next = argmax(&a);
        same += usize::from(next == argmax(&b));
        a = logits(&mut unmerged, &[next], pos);
        b = logits(&mut merged, &[next], pos);
        pos += 1;
    }
    eprintln!("merged vs unmerged: same next token {same}/{steps}");
    assert!(same >= steps * 7 / 8, "the merged model chose the same token in only {same} of {steps} steps");
}

/// The prompt text of each training example built from the mini PubMedQA file, once with every
/// example answerable (`no_answer` 0) and once with every one a NOT_FOUND example (1).
fn example_prompts() -> [Vec<(String, String, String)>; 2] {
    use pocketrag::tune::data;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pubmedqa-mini.json");
    let entries = data::read_pubmedqa(&std::fs::read(&path).unwrap(), "mini").unwrap();
    let refs: Vec<&data::QaEntry> = entries.iter().collect();
    let mut engine = pocketrag::rag::Engine::new(common::embedder(), Some(common::generator()));
    data::index_entries(&mut engine, &refs, &mut |_, _| {}).unwrap();
    let tokenizer = engine.generator().unwrap().tokenizer();
    [0.0, 1.0].map(|no_answer| {
        let (examples, stats) = data::build_examples(&engine, &refs, 3, no_answer, 640, 7).unwrap();
        assert_eq!(stats.not_found, if no_answer == 1.0 { examples.len() } else { 0 });
        examples
            .iter()
            .map(|e| {
                let prompt = tokenizer.decode(&e.ids[..e.prompt_len], false).unwrap();
                let answer = tokenizer.decode(&e.ids[e.prompt_len..], false).unwrap();
                (data::document_name(&e.id), prompt, answer)
            })
            .collect()
    })
}

#[test]
fn training_examples_cite_their_own_abstract_and_refuse_only_over_other_papers() {
    let [answerable, refused] = example_prompts();
    assert_eq!(answerable.len(), 4);
    for (gold, prompt, answer) in &answerable {
        assert!(prompt.contains(gold.as_str()), "{gold} not among the sources:\n{prompt}");
        assert!(answer.contains('[') && !answer.contains(pocketrag::rag::NOT_FOUND), "{answer}");
    }
    assert_eq!(refused.len(), 4);
    for (gold, prompt, answer) in &refused {
        // The sources are other papers' best passages: nothing from the question's own abstract.
        assert!(!prompt.contains(gold.as_str()), "{gold} is a source of its NOT_FOUND example:\n{prompt}");
        assert!(prompt.matches("pubmedqa/").count() >= 2, "too few unrelated sources:\n{prompt}");
        assert!(answer.starts_with(pocketrag::rag::NOT_FOUND), "{answer}");
    }
}
