//! Our GGUF-derived tokenizer must produce exactly llama.cpp's token ids. The fixture was made once
//! with llama-cpp-python (see tests/fixtures/gen_reference.py) over 350 varied strings.

mod common;

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn smollm2_tokens_match_llama_cpp() {
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(common::fixture("smollm2_tokens.json")).unwrap()).unwrap();
    assert!(cases.len() >= 300);
    let g = common::shared_generator().lock().unwrap();
    let mut failures = Vec::new();
    for c in &cases {
        let ids = g.encode(&c.text).unwrap();
        if ids != c.ids {
            failures.push(format!("{:?}\n  ours: {:?}\n  ref:  {:?}", c.text, ids, c.ids));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn decoding_round_trips() {
    let g = common::shared_generator().lock().unwrap();
    for text in ["Hello world", "  spaces\tand\nnewlines ", "naïve café — 東京 🚲", "x = [1, 2, 3];"] {
        let ids = g.encode(text).unwrap();
        assert_eq!(g.tokenizer().decode(&ids, false).unwrap(), text);
    }
    assert_eq!(g.encode("Hello world").unwrap(), vec![19556, 905]);
}
