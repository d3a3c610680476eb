//! The whole pipeline on the real models: index a small document set written for this test (one
//! Markdown, one text, one HTML file), ask questions whose answers are each in exactly one
//! document, and check the right document is cited; ask an unrelated question and check the
//! engine abstains; save and reload the library and get the same search results.

mod common;

use pocketrag::rag::{CitedBy, Decision, Mode, NOT_FOUND};
use pocketrag::Engine;
use std::path::Path;

fn library_engine() -> Engine {
    let mut engine = Engine::new(common::embedder(), Some(common::generator()));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/library");
    for name in ["lighthouse.md", "sourdough.txt", "bicycle.html"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        engine.add_document(name, &bytes, &mut |_, _| {}).unwrap();
    }
    engine
}

// The base model's exact greedy text can differ between CPUs: the embedder's f32 matrix products
// dispatch at run time to AVX-512, AVX2 or SSE kernels that round differently, which can reorder
// near-tied sources in the prompt, and a 135M model turns a different prompt into a different
// sentence. So this test asks what holds on every CPU (the right source comes first and is in the
// prompt, nothing is cited wrongly), and the next test checks attribution on fixed answers. The
// wasm build, whose arithmetic is the same everywhere, is held to a citation on a generated answer
// in tests/wasm and tests/web.
#[test]
fn answers_come_from_the_document_that_holds_the_answer() {
    let mut engine = library_engine();
    // With each question, a sentence the answer could hold, worded as its document words it.
    let cases = [
        ("When was the Harrow Point lighthouse first lit?", "lighthouse.md", "It was lit for the first time in 1871."),
        (
            "How often should I feed a sourdough starter kept in the fridge?",
            "sourdough.txt",
            "Feed the starter once a week if it lives in the refrigerator.",
        ),
        (
            "How do I find the hole in an inner tube?",
            "bicycle.html",
            "Find the hole by pumping a little air into the tube and listening for the hiss.",
        ),
    ];
    for (question, doc, claim) in cases {
        let mut streamed = String::new();
        let a = engine.answer(question, Mode::Rag, 4, &mut |t| streamed.push_str(t), &|| false).unwrap();
        assert!(!a.abstained, "{question}: abstained");
        assert!(!a.answer.is_empty());
        assert_eq!(streamed.trim(), a.answer, "streamed text is the answer");
        assert_eq!(a.sources[0].doc, doc, "{question}: best source");
        assert!(a.prompt.contains(&format!("[1] {doc}")), "{question}: prompt lacks source [1]");
        for c in &a.citations {
            assert_eq!(c.doc, doc, "{question}: cited {:?} ({:?}) for answer {:?}", c.doc, c.by, a.answer);
            assert!(a.prompt.contains(&format!("[{}] {}", c.n, c.doc)), "prompt lacks source [{}]", c.n);
            assert_verbatim(&engine, c);
        }
        assert_eq!(a.sentences.iter().filter(|s| s.cited.is_some()).count() > 0, !a.citations.is_empty());
        // The generated answer may cite nothing (the loop above then checks nothing), so the
        // same check runs on a fixed sentence against the same sources: it must be cited, and to
        // the right document.
        let (_, cited) = engine.check(claim, &a.sources).unwrap();
        assert!(!cited.is_empty(), "{question}: {claim:?} is not cited from {:?}", a.sources);
        for c in &cited {
            assert_eq!(c.doc, doc, "{question}: {claim:?} cited to {}", c.doc);
            assert_verbatim(&engine, c);
        }
        assert!(a.prompt_tokens > 50 && a.generated_tokens > 0);
        assert!(a.timings_ms.prefill > 0.0 && a.timings_ms.decode > 0.0 && a.timings_ms.embed > 0.0);
    }
}

/// A citation's quote is the document's own text at its offsets, inside its passage.
fn assert_verbatim(engine: &Engine, c: &pocketrag::rag::Citation) {
    let doc = engine.library().documents().iter().find(|d| d.name == c.doc).expect("cited document is indexed");
    assert_eq!(&doc.text[c.start..c.end], c.quote, "quote of [{}] is not the document's text", c.n);
    assert!(c.start < c.passage_end && c.end > c.passage_start, "quote of [{}] lies outside its passage", c.n);
}

#[test]
fn written_sentences_are_cited_only_where_a_source_sentence_supports_them() {
    let engine = library_engine();
    let sources = engine.search("When was the Harrow Point lighthouse first lit?", 4).unwrap().hits;
    let lighthouse = sources.iter().position(|s| s.text.contains("1871")).expect("the answer is retrieved") + 1;
    let check = |answer: &str| engine.check(answer, &sources).unwrap();
    let ns = |cs: &[pocketrag::rag::Citation]| cs.iter().map(|c| (c.n, c.by)).collect::<Vec<_>>();

    // The model's own marker on a supported sentence; a marker outside the prompt is ignored and
    // the unsupported sentence it sits on is marked so.
    let (marks, c) = check(&format!(
        "The Harrow Point lighthouse was first lit in 1871 [{lighthouse}]. It has a gift shop and a cafe [9]."
    ));
    assert_eq!(ns(&c), [(lighthouse, CitedBy::Model)], "{marks:?}");
    assert!(c[0].quote.contains("1871") && c[0].doc == "lighthouse.md", "{c:?}");
    assert_verbatim(&engine, &c[0]);
    assert_eq!(marks.iter().map(|m| m.cited).collect::<Vec<_>>(), [Some(lighthouse), None]);
    // No marker: the sentence is matched to the source sentence it restates.
    let (_, c) = check("The Harrow Point lighthouse was lit for the first time in 1871.");
    assert_eq!(ns(&c), [(lighthouse, CitedBy::Match)]);
    // A changed number keeps every other word and is still not supported.
    let (marks, c) = check(&format!("The Harrow Point lighthouse was first lit in 1923 [{lighthouse}]."));
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(marks[0].cited, None);
    // A correct first sentence still counts when the model rambles on after it.
    let (marks, c) = check(
        "The lighthouse on Kessel Island was lit for the first time in 1871. I hope this helps you with your \
         homework, and please let me know if there is anything else you would like to ask me about today!",
    );
    assert_eq!(ns(&c), [(lighthouse, CitedBy::Match)]);
    assert_eq!(marks.len(), 2);
    assert_eq!(marks[1].cited, None);
    // Unrelated text, and the refusal, cite nothing.
    assert!(check("Bananas are yellow and rich in potassium, which keeps muscles working.").1.is_empty());
    assert!(check(NOT_FOUND).1.is_empty());
}

#[test]
fn the_default_mode_quotes_the_answering_sentence_without_a_language_model() {
    let mut engine = Engine::new(common::embedder(), None);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/library");
    for name in ["lighthouse.md", "sourdough.txt", "bicycle.html"] {
        engine.add_document(name, &std::fs::read(dir.join(name)).unwrap(), &mut |_, _| {}).unwrap();
    }
    let cases = [
        ("When was the Harrow Point lighthouse first lit?", "lighthouse.md", "1871"),
        ("Who was the last resident keeper of the lighthouse?", "lighthouse.md", "Marta Lindqvist"),
        ("How do I find the hole in an inner tube?", "bicycle.html", "hiss"),
    ];
    for (question, doc, gold) in cases {
        let mut streamed = String::new();
        let a = engine.answer(question, Mode::Quote, 4, &mut |t| streamed.push_str(t), &|| false).unwrap();
        assert!(!a.abstained, "{question}: abstained (support {:?})", a.support);
        assert_eq!(streamed, a.answer);
        assert!(a.answer.contains(gold), "{question}: {:?}", a.answer);
        assert!(!a.citations.is_empty() && a.citations.len() <= 3);
        for c in &a.citations {
            assert_eq!(c.doc, doc);
            assert_eq!(c.by, CitedBy::Quote);
            assert_verbatim(&engine, c);
            // The answer is made of the quotes and their marks, nothing else.
            assert!(a.answer.contains(&format!("{} [{}]", c.quote, c.n)), "{:?}", a.answer);
        }
        assert_eq!(a.generated_tokens, 0);
        assert!(a.support.unwrap() >= engine.scorer().threshold);
    }
    let a = engine.answer("What is the capital of France?", Mode::Quote, 4, &mut |_| {}, &|| false).unwrap();
    assert!(a.abstained && a.answer == NOT_FOUND && a.citations.is_empty());
    // The modes that write need the model, and so does building their prompt.
    assert!(engine.answer("When was it lit?", Mode::Rag, 4, &mut |_| {}, &|| false).is_err());
    let sources = engine.search("When was it lit?", 4).unwrap().hits;
    let e = engine.rag_prompt("When was it lit?", sources, 500).unwrap_err();
    assert!(e.to_string().contains("no language model"), "{e}");
}

/// Reference pages: a defined term's heading opens its quote, a sentence that introduces a list
/// comes with the list, and a yes/no question gets the decision its quote supports.
#[test]
fn quotes_carry_the_term_and_the_list_and_yes_no_questions_get_a_decision() {
    let mut engine = Engine::new(common::embedder(), None);
    let page = "<html><body><h1>tidewatch reference</h1>\
        <h2>Options</h2>\
        <h3>--dry-run</h3><p>Prints every change tidewatch would make to the folder and writes nothing to disk.</p>\
        <h3>--keep-logs</h3><p>Keeps the log files of a successful run instead of deleting them.</p>\
        <h2>File systems</h2><p>tidewatch watches folders on the following file systems:</p>\
        <ul><li>ext4</li><li>btrfs</li><li>xfs</li></ul>\
        <h2>Permissions</h2><p>tidewatch does not need root access to watch a folder that you own.</p>\
        </body></html>";
    engine.add_document("tidewatch.html", page.as_bytes(), &mut |_, _| {}).unwrap();
    let ask = |engine: &mut Engine, q: &str| {
        let a = engine.answer(q, Mode::Quote, 4, &mut |_| {}, &|| false).unwrap();
        assert!(!a.abstained, "{q}: abstained (support {:?})", a.support);
        for c in &a.citations {
            assert_verbatim(engine, c);
        }
        a
    };
    let a = ask(&mut engine, "Which option prints the changes tidewatch would make without writing to disk?");
    assert!(a.citations[0].quote.starts_with("--dry-run"), "{:?}", a.answer);
    assert_eq!(a.decision, None);
    let a = ask(&mut engine, "Which file systems can tidewatch watch folders on?");
    assert!(a.answer.contains("ext4") && a.answer.contains("xfs"), "{:?}", a.answer);
    let a = ask(&mut engine, "Does tidewatch need root access to watch my folder?");
    assert_eq!(a.decision, Some(Decision::No), "{:?}", a.answer);
    assert!(a.answer.starts_with("No: "), "{:?}", a.answer);
    let a = ask(&mut engine, "Can tidewatch keep the log files of a successful run?");
    assert_eq!(a.decision, Some(Decision::Yes), "{:?}", a.answer);
    assert!(a.answer.starts_with("Yes: "), "{:?}", a.answer);
}

#[test]
fn copy_mode_writes_only_runs_of_the_sources_each_cited() {
    let mut engine = library_engine();
    let a = engine
        .answer("When was the Harrow Point lighthouse first lit?", Mode::Copy, 4, &mut |_| {}, &|| false)
        .unwrap();
    assert!(!a.abstained, "{a:?}");
    assert!(a.generated_tokens > 0 && !a.citations.is_empty(), "{:?}", a.answer);
    // Every word of the answer is a copied run, a citation mark or a joiner.
    let mut rest = a.answer.clone();
    for c in &a.citations {
        assert_eq!(c.by, CitedBy::Model);
        assert_verbatim(&engine, c);
        assert!(rest.contains(&c.quote), "{:?} not in {:?}", c.quote, a.answer);
        rest = rest.replacen(&c.quote, " ", 1).replacen(&format!("[{}]", c.n), " ", 1);
    }
    let left: Vec<&str> = rest
        .split(|ch: char| ch.is_whitespace() || ",.".contains(ch))
        .filter(|w| !w.is_empty() && !["and", "or", "Yes", "No"].contains(w))
        .collect();
    assert!(left.is_empty(), "{left:?} left over in {:?}", a.answer);
    let a = engine.answer("What is the capital of France?", Mode::Copy, 4, &mut |_| {}, &|| false).unwrap();
    assert!(a.abstained && a.generated_tokens == 0);
}

#[test]
fn questions_that_cannot_be_asked_get_a_clear_error() {
    let mut engine = Engine::new(common::embedder(), None);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/library");
    engine.add_document("lighthouse.md", &std::fs::read(dir.join("lighthouse.md")).unwrap(), &mut |_, _| {}).unwrap();
    let long = "why ".repeat(2500);
    for (question, says) in [
        ("", "empty"),
        ("   \n ", "empty"),
        (long.as_str(), "characters long"),
        ("when\u{7}was it lit?", "control character"),
    ] {
        let e = engine.answer(question, Mode::Quote, 4, &mut |_| {}, &|| false).unwrap_err().to_string();
        assert!(e.contains(says), "{question:?}: {e}");
        assert!(engine.search(question, 4).is_err());
    }
}

#[test]
fn abstains_when_nothing_relevant_is_indexed() {
    let mut engine = library_engine();
    let a = engine.answer("What is the capital of France?", Mode::Rag, 4, &mut |_| {}, &|| false).unwrap();
    assert!(a.abstained);
    assert_eq!(a.answer, NOT_FOUND);
    assert!(a.citations.is_empty());
    // Without retrieval the model answers from its own weights instead.
    let a = engine.answer("What is the capital of France?", Mode::NoRag, 4, &mut |_| {}, &|| false).unwrap();
    assert!(!a.abstained && a.sources.is_empty() && a.answer.contains("Paris"), "{:?}", a.answer);
}

#[test]
fn cancel_stops_generation_early() {
    let mut engine = library_engine();
    let count = std::cell::Cell::new(0);
    let a = engine
        .answer("How do I patch an inner tube?", Mode::Rag, 4, &mut |_| count.set(count.get() + 1), &|| {
            count.get() >= 3
        })
        .unwrap();
    assert_eq!(a.stop, Some(pocketrag::llm::StopReason::Cancelled));
    assert!(a.generated_tokens <= 4, "{}", a.generated_tokens);
}

#[test]
fn written_answers_stop_at_three_sentences() {
    let mut engine = library_engine();
    engine.settings.generate.max_tokens = 256;
    for question in ["How do I patch an inner tube?", "Tell me about the Harrow Point lighthouse."] {
        let a = engine.answer(question, Mode::Rag, 4, &mut |_| {}, &|| false).unwrap();
        let written = pocketrag::rag::support::claims(&pocketrag::rag::support::without_marks(&a.answer)).len();
        assert!(written <= 3, "{question}: {written} sentences, stop {:?}: {:?}", a.stop, a.answer);
        assert!(a.stop != Some(pocketrag::llm::StopReason::MaxTokens), "{:?}", a.answer);
    }
}

#[test]
fn library_survives_save_and_load_and_removal() {
    let engine = library_engine();
    let before = engine.search("vulcanising solution", 3).unwrap();
    let bytes = engine.save().unwrap();
    let mut other = Engine::new(common::embedder(), None);
    other.load(&bytes).unwrap();
    let after = other.search("vulcanising solution", 3).unwrap();
    let key = |r: &pocketrag::rag::SearchResult| r.hits.iter().map(|h| (h.doc.clone(), h.start)).collect::<Vec<_>>();
    assert_eq!(key(&before), key(&after));
    assert_eq!(after.hits[0].doc, "bicycle.html");

    assert!(other.remove_document("bicycle.html"));
    let gone = other.search("vulcanising solution", 5).unwrap();
    assert!(gone.hits.iter().all(|h| h.doc != "bicycle.html"));
    // Removals survive a round trip too.
    let mut third = Engine::new(common::embedder(), None);
    third.load(&other.save().unwrap()).unwrap();
    assert_eq!(third.library().documents().len(), 2);
    assert!(third.search("vulcanising solution", 5).unwrap().hits.iter().all(|h| h.doc != "bicycle.html"));
}

/// An index whose embedder name matches but whose vectors are not the embedder's size (made by
/// hand, or by a bug) is refused at load, not at the first search.
#[test]
fn an_index_with_vectors_of_another_size_is_refused_and_the_current_one_kept() {
    use pocketrag::chunk::{Chunk, ChunkConfig};
    use pocketrag::index::HnswConfig;
    let text = "Four numbers are not a MiniLM vector.";
    let mut lib =
        pocketrag::library::Library::new(pocketrag::rag::EMBEDDER_NAME, ChunkConfig::default(), HnswConfig::default());
    let chunk = Chunk { start: 0, end: text.len(), text: text.into(), heading: None, page: None, tokens: 9 };
    lib.add(pocketrag::ingest::ingest("short.txt", text.as_bytes()).unwrap(), vec![chunk], vec![vec![0.5; 4]]);
    let mut engine = library_engine();
    let err = engine.load(&lib.save().unwrap()).unwrap_err().to_string();
    assert!(err.contains("damaged") && err.contains("4 numbers"), "{err}");
    assert_eq!(engine.search("vulcanising solution", 1).unwrap().hits[0].doc, "bicycle.html");
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let mut engine = library_engine();
    engine.settings.generate.temperature = 0.9;
    engine.settings.generate.max_tokens = 24;
    let q = "Tell me about sourdough starters.";
    let mut run = |seed| {
        engine.settings.generate.seed = seed;
        engine.answer(q, Mode::NoRag, 4, &mut |_| {}, &|| false).unwrap().answer
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "another seed should sample another text");
}

#[test]
fn sources_are_trimmed_to_the_context_budget() {
    let mut engine = library_engine();
    engine.settings.min_relevance = -1.0; // let every chunk in, so the budget has to bite
    engine.settings.generate.max_tokens = 16;
    let full = engine.answer("How do I patch an inner tube?", Mode::Rag, 6, &mut |_| {}, &|| false).unwrap();
    engine.settings.context_budget = full.prompt_tokens / 2 + 16;
    let cut = engine.answer("How do I patch an inner tube?", Mode::Rag, 6, &mut |_| {}, &|| false).unwrap();
    assert!(cut.prompt_tokens + 16 <= engine.settings.context_budget, "{} tokens", cut.prompt_tokens);
    assert!(!cut.sources.is_empty() && cut.sources.len() <= full.sources.len());
    // The best source survives; what was cut came from the bottom of the ranking.
    assert_eq!(cut.sources[0].doc, full.sources[0].doc);
    assert_eq!(cut.sources[0].start, full.sources[0].start);
}
