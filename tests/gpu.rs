//! The GPU path (src/gpu, our WGSL kernels through wgpu) against the CPU path, on whatever
//! adapter this machine has: in CI and on machines without a GPU, Mesa's lavapipe (software
//! Vulkan, Debian's `mesa-vulkan-drivers`, which `make test` installs).
//!
//! The GPU kernels do the CPU path's arithmetic in the CPU path's order, so on an adapter whose f32
//! arithmetic is the CPU's (IEEE rounding, no fused multiply-adds: `Gpu::arithmetic_is_exact`,
//! true of lavapipe) the generator's logits are the same bits at every step, and free-running
//! greedy generation gives the same tokens. Hardware GPUs commonly fuse multiply-adds; there a
//! last-bit difference can move an activation across one of the 8-bit rounding steps taken before
//! every product, and grow from there through 30 blocks (as between our CPU kernel and candle's,
//! `tests/llama_parity.rs`). There the contract is every logit within `LOGIT_TOLERANCE` and the
//! same tokens up to the first near-tie (the CPU's top two logits within `TIE`).

mod common;

use pocketrag::gpu::{self, Backend, Gpu};
use pocketrag::llm::gpu::GpuLlama;
use pocketrag::llm::Message;
use std::sync::Arc;

/// Measured on lavapipe before the kernels followed the CPU's order: at most 1.41, on logits up
/// to ~30.
const LOGIT_TOLERANCE: f32 = 2.0;
/// Measured then: the gap between the CPU's top two tokens moved by at most 0.66 on the GPU.
const TIE: f32 = 1.0;
const STEPS: usize = 64;

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

fn top_two(v: &[f32]) -> (usize, usize) {
    let first = argmax(v);
    let second = (0..v.len()).filter(|&i| i != first).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    (first, second)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn gpu() -> Arc<Gpu> {
    let gpu = gpu::now(Gpu::new()).unwrap().expect("a GPU adapter (natively: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", gpu.describe());
    Arc::new(gpu)
}

/// Whether the adapter computes the CPU's bits. In CI (lavapipe) it must: that is what makes the
/// exact comparisons below run there.
fn exact(gpu: &Gpu) -> bool {
    let exact = gpu::now(gpu.arithmetic_is_exact()).unwrap().unwrap();
    eprintln!("the adapter's arithmetic is the CPU's: {exact}");
    if gpu.describe().starts_with("llvmpipe") {
        assert!(exact, "lavapipe's arithmetic was measured to be the CPU's");
    }
    exact
}

/// Logits at each step: the prompt in two slices (so the second attends to cached positions),
/// then `STEPS` tokens, each step's own greedy choice. Returns the logits and the tokens chosen.
fn greedy(forward: &mut dyn FnMut(&[u32], usize) -> Vec<f32>, ids: &[u32]) -> (Vec<Vec<f32>>, Vec<u32>) {
    let cut = ids.len() / 2;
    forward(&ids[..cut], 0);
    let mut logits = vec![forward(&ids[cut..], cut)];
    let mut tokens = Vec::new();
    for i in 0..STEPS {
        let next = argmax(logits.last().unwrap()) as u32;
        tokens.push(next);
        logits.push(forward(&[next], ids.len() + i));
    }
    (logits, tokens)
}

/// The contract: for a fixed set of prompts, the GPU's free-running greedy tokens are the
/// CPU's for 64 steps, and its logits are within a stated tolerance (here: the same bits, on an
/// adapter with the CPU's arithmetic).
#[test]
fn gpu_llama_matches_the_cpu() {
    let gpu = gpu();
    let exact = exact(&gpu);
    let mut generator = common::generator();
    let mut on_gpu = GpuLlama::new(gpu, generator.model(), 1024).unwrap();
    let prompts = [
        "Why do lighthouses flash in patterns? Explain briefly.",
        "Write a haiku about the sea.",
        "List three uses of copper.",
    ];
    for prompt in prompts {
        let chat = generator.render_chat(&[Message::new("user", prompt)]).unwrap();
        let ids = generator.encode(&chat).unwrap();
        let (cpu, cpu_tokens) = greedy(
            &mut |ids, pos| {
                let t = candle_core::Tensor::new(ids, &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
                generator.model_mut().forward(&t, pos).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
            },
            &ids,
        );
        let (gpu, gpu_tokens) = greedy(&mut |ids, pos| gpu::now(on_gpu.forward(ids, pos)).unwrap().unwrap(), &ids);
        if exact {
            assert_eq!(gpu_tokens, cpu_tokens, "{prompt:?}: the GPU chose other tokens");
            for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
                let same = c.iter().zip(g).all(|(c, g)| c.to_bits() == g.to_bits());
                assert!(same, "{prompt:?} step {step}: logits differ by up to {}", max_abs_diff(c, g));
            }
            eprintln!("{prompt:?}: the same {STEPS} tokens, every logit the same bits");
            continue;
        }
        // Up to the first step where the two chose differently, which must be a near-tie.
        let mut worst = 0f32;
        for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let d = max_abs_diff(c, g);
            assert!(d <= LOGIT_TOLERANCE, "{prompt:?} step {step}: logits differ by {d}");
            worst = worst.max(d);
            if step < STEPS && gpu_tokens[step] != cpu_tokens[step] {
                let (first, second) = top_two(c);
                assert!(c[first] - c[second] <= TIE, "{prompt:?} step {step}: the GPU chose another token");
                eprintln!("{prompt:?}: same tokens for {step} steps, then a near-tie went the other way");
                break;
            }
        }
        eprintln!("{prompt:?}: largest logit difference {worst}");
    }
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Our fine-tune on the GPU: its low-rank updates (two small f32 products per adapted matrix) are
/// applied there too, in the CPU's order. The tuned GPU logits (the prompt in one pass) must
/// match the tuned CPU ones (the prompt a token at a time: the two CPU paths give the same bits),
/// and be nearer to them than to the base model's, so the test fails if the GPU ignores the
/// adapter; switched off, the GPU computes exactly what a fresh base model does.
#[test]
fn gpu_applies_the_adapter() {
    let gpu = gpu();
    let mut generator = common::generator();
    let path = common::models_dir().join("adapters/pubmedqa-lora.safetensors");
    let adapter = pocketrag::llm::lora::Adapter::from_bytes(&std::fs::read(&path).unwrap(), "adapter").unwrap();
    let chat = generator.render_chat(&[Message::new("user", "Does aspirin lower the risk of stroke?")]).unwrap();
    let ids = generator.encode(&chat).unwrap();
    let cpu_logits = |generator: &mut pocketrag::llm::Generator| -> Vec<f32> {
        generator.model_mut().clear_cache();
        let mut last = vec![];
        for (pos, &id) in ids.iter().enumerate() {
            let t = candle_core::Tensor::new(&[id], &candle_core::Device::Cpu).unwrap().unsqueeze(0).unwrap();
            last = generator.model_mut().forward(&t, pos).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        }
        last
    };
    let cpu_base = cpu_logits(&mut generator);
    generator.set_adapter(Some(&adapter)).unwrap();
    let cpu_tuned = cpu_logits(&mut generator);

    let exact = exact(&gpu);
    let same = |a: &[f32], b: &[f32]| match exact {
        true => a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()),
        false => max_abs_diff(a, b) <= LOGIT_TOLERANCE,
    };
    let mut on_gpu = GpuLlama::new(gpu.clone(), generator.model(), 256).unwrap();
    let gpu_tuned = gpu::now(on_gpu.forward(&ids, 0)).unwrap().unwrap();
    assert!(same(&gpu_tuned, &cpu_tuned), "tuned: logits differ by up to {}", max_abs_diff(&gpu_tuned, &cpu_tuned));
    let (near, far) = (mean_abs_diff(&gpu_tuned, &cpu_tuned), mean_abs_diff(&gpu_tuned, &cpu_base));
    eprintln!("tuned GPU logits: {near} from the tuned CPU's on average, {far} from the base model's");
    assert!(near * 2.0 < far, "the GPU's tuned logits are {near} from the CPU's, {far} from the base model's");

    // Switched off, the GPU computes exactly what a GPU model loaded without the adapter does.
    generator.set_adapter(None).unwrap();
    on_gpu.sync_adapter(generator.model()).unwrap();
    let gpu_base = gpu::now(on_gpu.forward(&ids, 0)).unwrap().unwrap();
    let mut fresh = GpuLlama::new(gpu, generator.model(), 256).unwrap();
    assert_eq!(gpu_base, gpu::now(fresh.forward(&ids, 0)).unwrap().unwrap());
    assert!(same(&gpu_base, &cpu_base), "base: logits differ by up to {}", max_abs_diff(&gpu_base, &cpu_base));
}

/// The generator's own switch: a self-test, then generation through the same stepping API the
/// browser drives, on the GPU; bad input is refused with a reason, not a GPU fault.
#[test]
fn generator_runs_on_the_gpu_after_its_self_test() {
    let gpu = gpu();
    let mut generator = common::generator();
    gpu::now(generator.use_gpu(gpu.clone())).unwrap().unwrap();
    assert_eq!(generator.backend(), Backend::Gpu);
    let chat = generator.render_chat(&[Message::new("user", "Name a colour.")]).unwrap();
    let ids = generator.encode(&chat).unwrap();
    let params = pocketrag::llm::GenerateParams { max_tokens: 8, ..Default::default() };
    let on_gpu = generator.generate(&ids, &params, &mut |_| {}, &|| false).unwrap();
    assert!(!on_gpu.text.trim().is_empty());

    let mut on_gpu = GpuLlama::new(gpu, generator.model(), 256).unwrap();
    let err = gpu::now(on_gpu.forward(&[u32::MAX], 0)).unwrap().unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let err = gpu::now(on_gpu.forward(&[1], 256)).unwrap().unwrap_err().to_string();
    assert!(err.contains("past the GPU cache"), "{err}");
    let err = gpu::now(on_gpu.forward(&[], 0)).unwrap().unwrap_err().to_string();
    assert!(err.contains("positions in one GPU pass"), "{err}");
}

/// The embedder on the GPU: every vector within cosine 0.9999 of the CPU's (the contract),
/// for texts of many lengths in one padded batch (so padding must be masked out of attention and
/// pooling), and a batch of one.
#[test]
fn gpu_embedder_matches_the_cpu() {
    let gpu = gpu();
    let mut embedder = common::embedder();
    let long = "Lighthouses flash in patterns so that sailors can tell one from another at night. ".repeat(4);
    let texts = [
        "Hi",
        "How do embeddings, vector search and retrieval work together?",
        "Quantization stores each weight in eight bits with one scale per block of thirty-two.",
        long.as_str(),
        "The harbour floods at spring tide.",
    ];
    let cpu = embedder.embed(&texts).unwrap();
    let weights = std::fs::read(common::models_dir().join("minilm/model.safetensors")).unwrap();
    gpu::now(embedder.use_gpu(gpu, &weights)).unwrap().unwrap();
    assert_eq!(embedder.backend(), Backend::Gpu);
    let on_gpu = embedder.embed(&texts).unwrap();
    let single = embedder.embed(&texts[1..2]).unwrap();
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut worst = 1f32;
    for (text, (c, g)) in texts.iter().zip(cpu.iter().zip(&on_gpu)) {
        let cos = cosine(c, g);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", &text[..text.len().min(40)]);
    }
    assert!(cosine(&single[0], &cpu[1]) >= 0.9999);
    eprintln!("smallest cosine between the GPU's and the CPU's vectors: {worst}");
}
