//! Our candle BERT embeddings must match sentence-transformers' on the same texts (fixture made
//! once with sentence-transformers, see tests/fixtures/gen_reference.py), including texts long
//! enough to be truncated.

mod common;

use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    model_max_seq_length: usize,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    embedding: Vec<f32>,
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let f: Fixture =
        serde_json::from_slice(&std::fs::read(common::fixture("minilm_embeddings.json")).unwrap()).unwrap();
    assert_eq!(f.model_max_seq_length, pocketrag::embed::MAX_SEQ_LEN);
    let e = common::embedder();
    let texts: Vec<&str> = f.items.iter().map(|i| i.text.as_str()).collect();
    // Embedded together (batched, padded) and one by one: both must match.
    let batched = e.embed(&texts).unwrap();
    let mut worst = 1.0f32;
    for (item, ours) in f.items.iter().zip(&batched) {
        let single = e.embed(&[&item.text]).unwrap().remove(0);
        for v in [ours, &single] {
            let cos = pocketrag::index::vector::dot(v, &item.embedding);
            worst = worst.min(cos);
            assert!(cos >= 0.999, "cosine {cos} for {:?}", &item.text[..item.text.len().min(60)]);
        }
    }
    eprintln!("worst cosine {worst}");
}
