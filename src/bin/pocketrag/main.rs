//! The native command line: argument parsing, progress bars and terminal output over the same
//! `Engine` the browser uses.

mod args;
mod evaluate;
mod index;
mod tune;

use anyhow::{bail, Context, Result};
use args::{prompt_weights, reading, Cli, Command, LOW_MEMORY, READ};
use clap::Parser;
use evaluate::{calibrate, evaluate, evaluate_qa, QaSet, Unanswerable};
use index::index;
use indicatif::{ProgressBar, ProgressStyle};
use pocketrag::gpu::Backend;
use pocketrag::llm::llama::Weights;
use pocketrag::{models, Engine, Mode};
use std::io::Write;
use std::path::Path;
use tune::tune;

fn main() {
    restore_broken_pipe();
    let cli = Cli::parse();
    READ.store(cli.read, std::sync::atomic::Ordering::Relaxed);
    LOW_MEMORY.store(cli.low_memory, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Rust starts programs with SIGPIPE ignored, so `pocketrag search … | head -1` would panic at the
/// next print after `head` exits; with the default action the process ends quietly, as other
/// command-line tools do when their reader goes away.
fn restore_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread is started or any output written.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Index { out, fresh, backend, paths } => index(&cli.models, &out, fresh, backend, &paths),
        Command::Search { index, k, json, query } => {
            let engine = open(&cli.models, Some(&index), None)?;
            let found = engine.search(&query, k)?;
            if json {
                let out = serde_json::json!({ "index": found.index, "hits": found.hits });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for (i, h) in found.hits.iter().enumerate() {
                    println!("{:>2}. {:.3}  {}{}", i + 1, h.score, h.doc, location(h.page, h.heading.as_deref()));
                    println!("    {}", one_line(&h.text, 200));
                }
            }
            Ok(())
        }
        Command::Ask {
            index,
            k,
            no_rag,
            free,
            copy,
            json,
            temperature,
            top_p,
            seed,
            max_tokens,
            model,
            tuned,
            adapter,
            backend,
            question,
        } => {
            let model = match (model, tuned) {
                (Some(m), _) => m,
                (None, true) => cli.models.join(models::TUNED_GENERATOR_FILE),
                (None, false) => models::generator_path(&cli.models),
            };
            if !no_rag && index.is_none() {
                bail!("--index is required unless --no-rag is given");
            }
            let mode = match (no_rag, free, copy) {
                (true, _, _) => Mode::NoRag,
                (_, true, _) => Mode::Rag,
                (_, _, true) => Mode::Copy,
                _ => Mode::Quote,
            };
            let weights = prompt_weights();
            // The default mode quotes the documents; the model only reads for the gate.
            let generator = (mode.uses_model() || reading()).then_some((model.as_path(), weights));
            let mut engine = open(&cli.models, index.as_deref(), generator)?;
            if let Some(path) = adapter.filter(|_| mode.uses_model()) {
                let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                engine.load_adapter(pocketrag::llm::lora::Adapter::from_bytes(&bytes, &path.display().to_string())?)?;
                engine.use_adapter(true)?;
            }
            if backend == Backend::Gpu && mode.uses_model() {
                let gpu = pocketrag::gpu::now(pocketrag::gpu::Gpu::new())??;
                let description = gpu.describe();
                let generator = engine.generator_mut().context("no language model is loaded")?;
                let test = pocketrag::gpu::now(generator.use_gpu(std::sync::Arc::new(gpu)))??;
                eprintln!("generating on the GPU: {description}; {test}");
            }
            let g = &mut engine.settings.generate;
            g.temperature = temperature;
            g.top_p = top_p;
            g.seed = seed;
            g.max_tokens = max_tokens;
            let mut stdout = std::io::stdout();
            let mut stream = |piece: &str| {
                if !json {
                    let _ = write!(stdout, "{piece}");
                    let _ = stdout.flush();
                }
            };
            let answer = engine.answer(&question, mode, k, &mut stream, &|| false)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!();
                for c in &answer.citations {
                    println!(
                        "[{}] {}{}  (bytes {}..{}, passage score {:.3}{})",
                        c.n,
                        c.doc,
                        location(c.page, c.heading.as_deref()),
                        c.start,
                        c.end,
                        c.score,
                        if c.by == pocketrag::rag::CitedBy::Match { ", matched by the check" } else { "" }
                    );
                    println!("    \"{}\"", one_line(&c.quote, 300));
                }
                let unsupported: Vec<_> = answer.sentences.iter().filter(|s| s.cited.is_none()).collect();
                if !unsupported.is_empty() {
                    println!("not found in your documents:");
                    for s in unsupported {
                        println!("    {}", one_line(&s.text, 300));
                    }
                }
                if answer.abstained && !answer.sources.is_empty() {
                    println!("closest passages:");
                    for (i, s) in answer.sources.iter().enumerate() {
                        println!(
                            "  {}. {}{}: {}",
                            i + 1,
                            s.doc,
                            location(s.page, s.heading.as_deref()),
                            one_line(&s.text, 160)
                        );
                    }
                }
                let t = &answer.timings_ms;
                let tps = if t.decode > 0.0 { answer.generated_tokens as f64 / (t.decode / 1000.0) } else { 0.0 };
                eprintln!(
                    "\n{} prompt tokens, {} generated; embed {:.0} ms, search {:.1} ms, prefill {:.0} ms, decode {:.0} ms ({tps:.1} tok/s)",
                    answer.prompt_tokens, answer.generated_tokens, t.embed, t.search, t.prefill, t.decode
                );
            }
            Ok(())
        }
        Command::Calibrate {
            file,
            articles,
            every,
            k,
            max_wrong_abstain,
            json,
            foreign,
            foreign_every,
            near_miss_every,
        } => {
            let foreign = foreign.as_deref().map(|f| (f, foreign_every));
            let extra = Unanswerable { foreign, near_miss_every };
            calibrate(&cli.models, &file, &articles, every, k, max_wrong_abstain, json, extra)
        }
        Command::Requantize { from, to, input, output } => {
            let bytes = models::read(&input)?;
            let from = pocketrag::llm::quantize::parse_dtype(&from)?;
            let to = pocketrag::llm::quantize::parse_dtype(&to)?;
            let out = pocketrag::llm::quantize::requantize(&bytes, &input.display().to_string(), from, to)?;
            write_atomically(&output, &out)?;
            eprintln!("wrote {} ({} bytes)", output.display(), out.len());
            Ok(())
        }
        Command::Tune { config, data, fold, out, resume, stop_after, limit } => {
            tune(&cli.models, &config, &data, fold, &out, resume, stop_after, limit)
        }
        Command::Adapter { file, f16_out } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let adapter = pocketrag::llm::lora::Adapter::from_bytes(&bytes, &file.display().to_string())?;
            println!("{}", serde_json::to_string_pretty(&adapter.summary())?);
            if let Some(out) = f16_out {
                write_atomically(&out, &adapter.to_bytes_as(candle_core::DType::F16)?)?;
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
        Command::Merge { adapter, out, model } => {
            let base = model.unwrap_or_else(|| models::generator_path(&cli.models));
            let bytes = models::read(&base)?;
            let adapter_bytes =
                std::fs::read(&adapter).with_context(|| format!("cannot read {}", adapter.display()))?;
            let adapter = pocketrag::llm::lora::Adapter::from_bytes(&adapter_bytes, &adapter.display().to_string())?;
            let merged = pocketrag::llm::lora::merge_into_gguf(&bytes, &base.display().to_string(), &adapter)?;
            write_atomically(&out, &merged)?;
            eprintln!("wrote {} ({} bytes, {} matrices adapted)", out.display(), merged.len(), adapter.pairs.len());
            Ok(())
        }
        Command::Eval {
            format,
            file,
            limit,
            json,
            adapter,
            k,
            max_tokens,
            records,
            shard,
            articles,
            every,
            modes,
            index_cache,
        } => match format.as_str() {
            "pubmedqa" => evaluate(&cli.models, &file, limit, json, &adapter, k, max_tokens, records.as_deref(), shard),
            "squad" | "rust-docs" => {
                let set = QaSet { format: &format, file: &file, articles: &articles, every, limit };
                let index_cache = index_cache.as_deref();
                evaluate_qa(&cli.models, &set, &modes, k, max_tokens, json, records.as_deref(), index_cache)
            }
            other => bail!("unknown --format {other:?} (pubmedqa, squad or rust-docs)"),
        },
    }
}

/// Write `bytes` to `path` by way of a `.part` file renamed into place, so that a stopped run
/// never leaves a half-written file under the real name.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn counting_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what}  {{elapsed}} (eta {{eta}})"))
            .expect("valid template"),
    );
    bar
}

/// Build an engine: the embedder always, an index and the generator when given.
fn open(models_dir: &Path, index: Option<&Path>, generator: Option<(&Path, Weights)>) -> Result<Engine> {
    let embedder = models::load_embedder(models_dir)?;
    let generator = generator.map(|(path, weights)| models::load_generator_with(path, weights)).transpose()?;
    let mut engine = Engine::new(embedder, generator);
    engine.set_reading(reading());
    if let Some(path) = index {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read index {}", path.display()))?;
        engine.load(&bytes).with_context(|| format!("{}", path.display()))?;
    }
    Ok(engine)
}

fn location(page: Option<u32>, heading: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(p) = page {
        s.push_str(&format!(", page {p}"));
    }
    if let Some(h) = heading {
        s.push_str(&format!(" — {h}"));
    }
    s
}

fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}
