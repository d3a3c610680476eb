//! Probe: how well does the model's next-token choice among "Yes" / "No" / "Maybe", read right
//! after the prompt the app sends, decide PubMedQA questions? Writes one JSON line per question
//! and configuration with the log-probabilities of the label tokens, for offline analysis of
//! decision rules (argmax, prior correction, contextual calibration).
//!
//! cargo run --release --example decision_probe -- MODELS PQAL.json OUT.jsonl [ADAPTER FOLD]
//!
//! With an adapter, only the questions of the fold it held out (of the config's two) are asked.

use pocketrag::llm::llama::Weights;
use pocketrag::models;
use pocketrag::rag::prompt::{self, PromptSource};
use pocketrag::tune::data;
use pocketrag::Engine;
use std::io::Write;
use std::path::Path;

const LABELS: &[&str] = &["Yes", "No", "Maybe", "yes", "no", "maybe"];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(&args[0]);
    let bytes = std::fs::read(&args[1])?;
    let all = data::read_pubmedqa(&bytes, &args[1])?;
    let mut out = std::fs::File::create(&args[2])?;
    let mut adapters = Vec::new();
    if let Some(p) = args.get(3) {
        adapters.push(pocketrag::llm::lora::Adapter::from_bytes(&std::fs::read(p)?, p)?);
    }
    let held_out: Option<usize> = args.get(4).map(|f| f.parse()).transpose()?;
    let folds = data::folds(&all, 2);
    let generator = models::load_generator_with(&models::generator_path(dir), Weights::QuantizedAndDense)?;
    let mut engine = Engine::new(models::load_embedder(dir)?, Some(generator));
    engine.settings.generate.max_tokens = 96;
    let refs: Vec<&data::QaEntry> = all.iter().collect();
    data::index_entries(&mut engine, &refs, &mut |d, n| {
        if d % 100 == 0 {
            eprintln!("indexed {d}/{n}")
        }
    })?;
    let label_ids: Vec<u32> =
        LABELS.iter().map(|l| engine.generator().unwrap().encode(l).unwrap()[0]).collect::<Vec<_>>();
    eprintln!("label ids {label_ids:?}");
    let budget = engine.settings.context_budget - engine.settings.generate.max_tokens;
    let configs: Vec<bool> = if adapters.is_empty() { vec![false] } else { vec![true] };
    // Content-free prompts for contextual calibration, once per configuration (on the first
    // question asked in it).
    let na = "N/A";
    let mut calibrated: Vec<(bool, bool)> = Vec::new();
    for (i, entry) in all.iter().enumerate() {
        if held_out.is_some_and(|f| folds[i] != f) {
            continue;
        }
        let q = data::asked(entry);
        let (found, _) = engine.search_with_vector(&q, 4)?;
        let relevant: Vec<_> = found.hits.into_iter().filter(|h| h.score >= engine.settings.min_relevance).collect();
        let gold_first = relevant.first().is_some_and(|h| h.doc == data::document_name(&entry.id));
        let (_, _, rag_ids) = engine.rag_prompt(&q, relevant, budget)?;
        let g = engine.generator().unwrap();
        let plain_ids = g.encode(&g.render_chat(&prompt::plain_messages(&q))?)?;
        let free_q = format!("{na} {}", data::DECISION_HINT);
        let free_rag = {
            let ps = [PromptSource { title: na, text: na }];
            g.encode(&g.render_chat(&prompt::rag_messages(&free_q, &ps))?)?
        };
        let free_plain = g.encode(&g.render_chat(&prompt::plain_messages(&free_q))?)?;
        for &tuned in &configs {
            if tuned {
                engine.load_adapter(adapters[0].clone())?;
                engine.use_adapter(true)?;
            }
            for (rag, ids) in [(false, &plain_ids), (true, &rag_ids)] {
                let lp = engine.generator_mut().unwrap().next_log_probs(ids)?;
                let labels: Vec<f32> = label_ids.iter().map(|&t| lp[t as usize]).collect();
                let top = lp.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
                let free = if !calibrated.contains(&(tuned, rag)) {
                    calibrated.push((tuned, rag));
                    let f =
                        engine.generator_mut().unwrap().next_log_probs(if rag { &free_rag } else { &free_plain })?;
                    Some(label_ids.iter().map(|&t| f[t as usize]).collect::<Vec<f32>>())
                } else {
                    None
                };
                let rec = serde_json::json!({
                    "id": entry.id, "expected": entry.decision.word(), "tuned": tuned, "rag": rag,
                    "labels": labels, "top": engine.generator().unwrap().tokenizer().decode(&[top], false).unwrap_or_default(),
                    "gold_first": gold_first, "content_free": free,
                });
                writeln!(out, "{rec}")?;
            }
            engine.use_adapter(false)?;
        }
        if i % 25 == 0 {
            eprintln!("{i}/{}", all.len());
        }
    }
    Ok(())
}
