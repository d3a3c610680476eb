//! LoRA on a tiny random llama written as a real GGUF file (2 blocks, 32 features, 32 tokens), so
//! each test runs in milliseconds and checks the mathematics, not a particular model:
//! the training forward pass equals the inference one; gradients equal finite differences; loss
//! falls; a saved adapter reloads to identical outputs; merged and unmerged models agree; a run
//! stopped and resumed ends where an uninterrupted one does.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pocketrag::llm::llama::{Llama, Weights};
use pocketrag::llm::lora::{merge_into_gguf, Adapter, LoraConfig};
use pocketrag::tune::config::{DataConfig, Schedule, TuneConfig};
use pocketrag::tune::data::Example;
use pocketrag::tune::train::{example_loss, train, RunOptions};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::Cursor;

const VOCAB: usize = 32;
const DIM: usize = 32;
const FF: usize = 64;
const KV: usize = 16;

fn tiny_gguf(dtype: GgmlDType) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut random = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        QTensor::quantize(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap(), dtype).unwrap()
    };
    let ones = |n: usize| {
        QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap()
    };
    let mut tensors: Vec<(String, QTensor)> =
        vec![("token_embd.weight".into(), random(&[VOCAB, DIM], 1.0)), ("output_norm.weight".into(), ones(DIM))];
    for i in 0..2 {
        for (name, shape) in [
            ("attn_q", [DIM, DIM]),
            ("attn_k", [KV, DIM]),
            ("attn_v", [KV, DIM]),
            ("attn_output", [DIM, DIM]),
            ("ffn_gate", [FF, DIM]),
            ("ffn_up", [FF, DIM]),
            ("ffn_down", [DIM, FF]),
        ] {
            tensors.push((format!("blk.{i}.{name}.weight"), random(&shape, 0.4)));
        }
        tensors.push((format!("blk.{i}.attn_norm.weight"), ones(DIM)));
        tensors.push((format!("blk.{i}.ffn_norm.weight"), ones(DIM)));
    }
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.block_count", Value::U32(2)),
        ("llama.embedding_length", Value::U32(DIM as u32)),
        ("llama.rope.dimension_count", Value::U32(8)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).unwrap();
    out.into_inner()
}

fn load(bytes: &[u8]) -> Llama {
    let ct = gguf_file::Content::read(&mut Cursor::new(bytes)).unwrap();
    Llama::from_gguf(&ct, &mut Cursor::new(bytes), Weights::QuantizedAndDense, &Device::Cpu).unwrap()
}

fn lora_config() -> LoraConfig {
    LoraConfig { rank: 2, alpha: 4.0, targets: vec!["attn_q".into(), "attn_v".into(), "ffn_down".into()] }
}

/// An adapter whose B is random too, so that it changes the model and every gradient is non-zero.
fn random_adapter(model: &Llama, seed: u64) -> (Adapter, pocketrag::llm::lora::AdapterVars) {
    let (adapter, vars) =
        Adapter::new_trainable(&lora_config(), &model.projections().unwrap(), seed, &Device::Cpu).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed + 1);
    for (_, _, b) in &vars {
        let v: Vec<f32> = (0..b.elem_count()).map(|_| rng.random_range(-0.3..0.3)).collect();
        b.set(&Tensor::from_vec(v, b.shape(), &Device::Cpu).unwrap()).unwrap();
    }
    (adapter, vars)
}

fn last_logits(model: &mut Llama, tokens: &[u32]) -> Vec<f32> {
    model.clear_cache();
    let input = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input, 0).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TOKENS: [u32; 9] = [3, 17, 5, 30, 2, 9, 9, 21, 4];

#[test]
fn the_training_forward_pass_equals_the_inference_one() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let mut model = load(&bytes);
    for with_adapter in [false, true] {
        let (adapter, _vars) = random_adapter(&model, 1);
        model.set_adapter(with_adapter.then_some(&adapter)).unwrap();
        let n = TOKENS.len() as u32;
        let train = model.forward_train(&TOKENS, &[n - 1]).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let infer = last_logits(&mut model, &TOKENS);
        assert!(max_abs_diff(&train, &infer) < 1e-4, "adapter {with_adapter}: {train:?} vs {infer:?}");
    }
}

#[test]
fn an_untrained_adapter_changes_nothing() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let mut model = load(&bytes);
    let base = last_logits(&mut model, &TOKENS);
    let (adapter, _) = Adapter::new_trainable(&lora_config(), &model.projections().unwrap(), 3, &Device::Cpu).unwrap();
    model.set_adapter(Some(&adapter)).unwrap();
    assert_eq!(base, last_logits(&mut model, &TOKENS));
}

fn example() -> Example {
    Example { id: "t".into(), ids: TOKENS.to_vec(), prompt_len: 5, answerable: true }
}

#[test]
fn gradients_match_finite_differences() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let mut model = load(&bytes);
    let (adapter, vars) = random_adapter(&model, 11);
    model.set_adapter(Some(&adapter)).unwrap();
    let ex = example();
    let loss = example_loss(&model, &ex).unwrap();
    let grads = loss.backward().unwrap();
    let loss_value = |model: &Llama| example_loss(model, &ex).unwrap().to_scalar::<f32>().unwrap() as f64;
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, a, b) in &vars {
        for var in [a, b] {
            let grad: Vec<f32> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in [0, base.len() / 2, base.len() - 1] {
                let mut bumped = base.clone();
                bumped[i] = base[i] + eps;
                var.set(&Tensor::from_vec(bumped.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let up = loss_value(&model);
                bumped[i] = base[i] - eps;
                var.set(&Tensor::from_vec(bumped, var.shape(), &Device::Cpu).unwrap()).unwrap();
                let down = loss_value(&model);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                let numeric = (up - down) / (2.0 * eps as f64);
                let analytic = grad[i] as f64;
                let tolerance = 2e-3 + 2e-2 * numeric.abs().max(analytic.abs());
                assert!(
                    (numeric - analytic).abs() <= tolerance,
                    "{name}[{i}]: finite difference {numeric:.6}, backward {analytic:.6}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 3 * 3);
}

fn tune_config(steps_per_epoch_batch: usize, epochs: usize) -> TuneConfig {
    TuneConfig {
        lora: lora_config(),
        learning_rate: 2e-2,
        warmup_steps: 2,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        epochs,
        batch_size: steps_per_epoch_batch,
        max_seq_len: 128,
        seed: 5,
        checkpoint_every: 3,
        data: DataConfig { sources: 3, no_answer_fraction: 0.2, folds: 5, validation_examples: 0 },
    }
}

fn small_task() -> Vec<Example> {
    // Four sequences whose answer parts must be memorised.
    (0..4u32)
        .map(|k| Example {
            id: format!("{k}"),
            ids: (0..10).map(|i| (i * 3 + k * 7) % VOCAB as u32).collect(),
            prompt_len: 6,
            answerable: true,
        })
        .collect()
}

#[test]
fn loss_falls_and_a_saved_adapter_reloads_to_identical_outputs() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let mut model = load(&bytes);
    let dir = tempdir("falls");
    let cfg = tune_config(2, 15);
    let run = RunOptions { dir: &dir, resume: false, stop_after: None };
    let (adapter, summary) =
        train(&mut model, &small_task(), &small_task()[..1], &cfg, &BTreeMap::new(), &run, &mut |_| {}).unwrap();
    assert!(summary.finished && summary.steps == 30);
    assert!(summary.last_loss < 0.5 * summary.first_loss, "{summary:?}");
    let csv = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31);
    assert!(std::fs::read_to_string(dir.join("loss.svg")).unwrap().contains("<polyline"));

    let trained = last_logits(&mut model, &TOKENS);
    let file = std::fs::read(dir.join("adapter.safetensors")).unwrap();
    let reloaded = Adapter::from_bytes(&file, "adapter.safetensors").unwrap();
    assert_eq!(reloaded.config, adapter.config);
    let mut fresh = load(&bytes);
    fresh.set_adapter(Some(&reloaded)).unwrap();
    assert_eq!(trained, last_logits(&mut fresh, &TOKENS));
    // A second run into the same folder is refused rather than overwriting it.
    assert!(train(&mut load(&bytes), &small_task(), &[], &cfg, &BTreeMap::new(), &run, &mut |_| {}).is_err());
}

#[test]
fn a_stopped_and_resumed_run_ends_where_an_uninterrupted_one_does() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let cfg = tune_config(2, 4);
    let run = |dir: &std::path::Path, resume: bool, stop_after: Option<usize>| {
        let options = RunOptions { dir, resume, stop_after };
        train(&mut load(&bytes), &small_task(), &[], &cfg, &BTreeMap::new(), &options, &mut |_| {}).unwrap()
    };
    let whole = tempdir("whole");
    let (a, _) = run(&whole, false, None);
    let pieces = tempdir("pieces");
    let (_, first) = run(&pieces, false, Some(5));
    assert!(!first.finished && !pieces.join("adapter.safetensors").exists());
    let (b, second) = run(&pieces, true, None);
    assert!(second.finished);
    for (name, pa) in &a.pairs {
        let pb = &b.pairs[name];
        let diff = (&pa.b - &pb.b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{name}: {diff}");
    }
    assert_eq!(
        std::fs::read_to_string(whole.join("loss.csv")).unwrap().lines().count(),
        std::fs::read_to_string(pieces.join("loss.csv")).unwrap().lines().count()
    );
}

#[test]
fn merged_and_unmerged_models_agree() {
    // In f32 merging is exact up to rounding. In Q8_0 the merged weights are quantized once more,
    // which must stay small next to what the adapter changes.
    for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
        let bytes = tiny_gguf(dtype);
        let mut model = load(&bytes);
        let (adapter, _) = random_adapter(&model, 21);
        model.set_adapter(Some(&adapter)).unwrap();
        let unmerged = last_logits(&mut model, &TOKENS);
        let merged_bytes = merge_into_gguf(&bytes, "tiny.gguf", &adapter).unwrap();
        let merged = last_logits(&mut load(&merged_bytes), &TOKENS);
        let base = last_logits(&mut load(&bytes), &TOKENS);
        let diff = max_abs_diff(&unmerged, &merged);
        let effect = max_abs_diff(&unmerged, &base);
        match dtype {
            GgmlDType::F32 => assert!(diff < 1e-4, "merged vs unmerged differ by {diff}"),
            _ => assert!(
                diff < 0.05 * effect,
                "{dtype:?}: merged vs unmerged differ by {diff}; the adapter moves logits by {effect}"
            ),
        }
        assert!(effect > 0.1, "the adapter should change the model");
    }
}

#[test]
fn bad_adapters_are_refused_clearly() {
    let bytes = tiny_gguf(GgmlDType::F32);
    let mut model = load(&bytes);
    let err = Adapter::from_bytes(b"not an adapter", "x.safetensors").unwrap_err().to_string();
    assert!(err.contains("x.safetensors"), "{err}");
    // An adapter made for a model with other shapes.
    let wrong = vec![("blk.0.attn_q".to_string(), (DIM, DIM * 2))];
    let (other, _) = Adapter::new_trainable(&lora_config(), &wrong, 1, &Device::Cpu).unwrap();
    let err = model.set_adapter(Some(&other)).unwrap_err().to_string();
    assert!(err.contains("blk.0.attn_q"), "{err}");
    let bad = LoraConfig { rank: 2, alpha: 1.0, targets: vec!["attn_x".into()] };
    assert!(Adapter::new_trainable(&bad, &model.projections().unwrap(), 1, &Device::Cpu).is_err());
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pocketrag-lora-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
