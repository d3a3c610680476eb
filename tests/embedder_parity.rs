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

/// Our BERT (`embed::bert`) against candle-transformers' `BertModel`, the implementation the
/// embedder ran before, on the same token ids: the same vectors to float rounding.
#[test]
fn our_bert_matches_candles() {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};
    let dir = common::models_dir().join("minilm");
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let config: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let vb = candle_nn::VarBuilder::from_slice_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
    let reference = BertModel::load(vb, &config).unwrap();
    let e = common::embedder();
    let texts = [
        "Hello.",
        "Retrieval finds the passages; the model answers from them and cites them.",
        "LoRA trains two small matrices beside each frozen weight matrix, so a fine-tune is a few megabytes.",
    ];
    let ours = e.embed(&texts).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // The file asks for padding; these texts go through one at a time, unpadded.
    tokenizer.with_padding(None);
    let mut worst = 1.0f32;
    for (text, ours) in texts.iter().zip(&ours) {
        let ids = tokenizer.encode(*text, true).unwrap().get_ids().to_vec();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let hidden = reference.forward(&ids, &ids.zeros_like().unwrap(), None).unwrap();
        let mean = hidden.mean(1).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos: f32 = mean.iter().zip(ours).map(|(a, b)| a / norm * b).sum();
        let largest = mean.iter().zip(ours).map(|(a, b)| (a / norm - b).abs()).fold(0f32, f32::max);
        worst = worst.min(cos);
        assert!(cos > 0.999_999 && largest < 1e-5, "cosine {cos}, largest difference {largest} for {text:?}");
    }
    eprintln!("worst cosine to candle's BertModel {worst}");
}

/// The 8-bit embedder (`Precision::Int8`) gives every chunk of the demo's sample set and of the
/// test library (text nobody tuned the rounding on) a vector within cosine 0.99 of the f32 one.
#[test]
fn int8_vectors_stay_within_cosine_0_99_of_f32_on_every_chunk() {
    use pocketrag::embed::Precision;
    use pocketrag::kernels::int8::Form;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut e = common::embedder();
    let mut texts = Vec::new();
    for dir in ["samples", "tests/data/library"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().map(|f| f.unwrap().path()).collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let doc = pocketrag::ingest::ingest(&name, &std::fs::read(&path).unwrap()).unwrap();
            let chunks = pocketrag::chunk::chunk(&doc, &Default::default(), &|t| e.count_tokens(t));
            texts.extend(chunks.iter().map(|c| c.embedding_text()));
        }
    }
    assert!(texts.len() >= 20, "{} chunks", texts.len());
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let exact = e.embed(&texts).unwrap();
    e.set_precision(Precision::Int8);
    assert_eq!(e.precision(), Precision::Int8);
    // The build's own form (here `Wide`, as the SIMD128 build's), then the relaxed SIMD build's
    // numbers, which the portable loop computes the same.
    for form in [Form::FASTEST, Form::Bytes] {
        e.set_precision_in(Precision::Int8, form);
        let rounded = e.embed(&texts).unwrap();
        let mut worst = 1.0f32;
        for ((text, a), b) in texts.iter().zip(&exact).zip(&rounded) {
            let cos = pocketrag::index::vector::dot(a, b);
            worst = worst.min(cos);
            assert!(cos >= 0.99, "{form:?}: cosine {cos} for {:?}", &text[..text.len().min(60)]);
        }
        eprintln!("int8 ({form:?}) against f32 over {} chunks: worst cosine {worst}", texts.len());
    }
    // Back to f32: the same vectors as before, to the bit.
    e.set_precision(Precision::F32);
    assert_eq!(e.embed(&texts[..3]).unwrap(), exact[..3].to_vec());
}
