//! The native command line: argument parsing, progress bars and terminal output over the same
//! `Engine` the browser uses.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pocketrag::ingest::MAX_DOCUMENT_BYTES;
use pocketrag::llm::llama::Weights;
use pocketrag::{models, Engine, Mode};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Cpu,
    Gpu,
}

#[derive(Parser)]
#[command(
    name = "pocketrag",
    version,
    about = "Private document Q&A: index files, search them, ask questions with cited answers"
)]
struct Cli {
    /// Folder holding the fetched models (see `make models`).
    #[arg(long, global = true, default_value = "models", env = "POCKETRAG_MODELS")]
    models: PathBuf,
    /// In the default mode, let the support gate read the best sentence with the language model
    /// (loads it; README, "Abstention"). Off by default: measured, it did not help yet.
    #[arg(long, global = true)]
    read: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--read`, set once in `main`, read wherever an engine is opened.
static READ: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn reading() -> bool {
    READ.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Subcommand)]
enum Command {
    /// Index files and folders (text, Markdown, HTML, PDF) into one index file. An existing index
    /// is updated: documents with the same name are replaced.
    Index {
        #[arg(long)]
        out: PathBuf,
        /// Start a new index even if OUT exists.
        #[arg(long)]
        fresh: bool,
        /// Where the embedder runs: `gpu` uses our WGSL kernels through wgpu, after a self-test
        /// against the CPU; it fails with the reason if there is no usable GPU.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show the chunks that best match a query.
    Search {
        #[arg(long)]
        index: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        json: bool,
        query: String,
    },
    /// Answer a question from the indexed documents, citing them.
    Ask {
        #[arg(long)]
        index: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Ask the model alone, without retrieval.
        #[arg(long, conflicts_with = "free")]
        no_rag: bool,
        /// Let the model write the answer from the retrieved passages (each sentence is then
        /// checked against them), instead of quoting the passages' answering sentences.
        #[arg(long, conflicts_with = "copy")]
        free: bool,
        /// Let the model write the answer by copying runs of the retrieved passages, each cited
        /// (quote-constrained decoding), when the support gate finds an answer.
        #[arg(long, conflicts_with = "no_rag")]
        copy: bool,
        #[arg(long)]
        json: bool,
        /// 0 = greedy decoding.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 0.9)]
        top_p: f64,
        #[arg(long, default_value_t = 299792458)]
        seed: u64,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Generator GGUF file (default: the re-quantized SmolLM2 in the models folder).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Read the prompt with the 8-bit weights only, instead of f32 copies (~2.5x slower
        /// prompt reading, ~425 MB less memory).
        #[arg(long)]
        low_memory: bool,
        /// Answer with our fine-tuned model (the merged GGUF that `make models` writes).
        #[arg(long, conflicts_with = "model")]
        tuned: bool,
        /// Apply this LoRA adapter at load time (e.g. a checkpoint of `pocketrag tune`).
        #[arg(long, conflicts_with = "tuned")]
        adapter: Option<PathBuf>,
        /// Where the language model runs: `gpu` uses our WGSL kernels through wgpu (Vulkan,
        /// Metal or DX12), after a self-test against the CPU; it fails with the reason if there
        /// is no usable GPU.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        question: String,
    },
    /// Show an adapter's settings and provenance; optionally write a half-size (f16) copy.
    Adapter {
        file: PathBuf,
        #[arg(long)]
        f16_out: Option<PathBuf>,
    },
    /// Fine-tune a LoRA adapter on PubMedQA-format data (see models/tune.json). Writes a run
    /// folder: config, data hashes, loss.csv, loss.svg, checkpoints and the adapter.
    Tune {
        #[arg(long, default_value = "models/tune.json")]
        config: PathBuf,
        /// Training questions in PubMedQA's JSON format.
        #[arg(long)]
        data: PathBuf,
        /// Hold this cross-validation fold out (0..folds); without it, train on every question.
        #[arg(long)]
        fold: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        /// Continue the checkpoint in OUT.
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimizer steps in total (resume later with --resume).
        #[arg(long)]
        stop_after: Option<usize>,
        /// Use only the first N training questions (quick trials).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Fold an adapter into the base model's weights and write a new GGUF file.
    Merge {
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Base GGUF (default: the generator in the models folder).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Measure retrieval, and answers of the base and tuned model without and with retrieval.
    Eval {
        /// "pubmedqa": a JSON object keyed by id with QUESTION, CONTEXTS, final_decision and
        /// LONG_ANSWER. "squad": a SQuAD 1.1/2.0 file; the --articles are indexed together as
        /// one collection and their questions asked as `ask` asks them. "rust-docs": our
        /// question set over the Rust toolchain's HTML books (eval/rust-docs.json).
        #[arg(long, default_value = "pubmedqa")]
        format: String,
        file: PathBuf,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
        /// Tuned adapters (repeatable). Each question is answered by one that did not train on it;
        /// default: the shipped adapter.
        #[arg(long)]
        adapter: Vec<PathBuf>,
        #[arg(long, default_value_t = 4)]
        k: usize,
        #[arg(long, default_value_t = 96)]
        max_tokens: usize,
        /// Write each question's retrieval rank and four answers to this file (JSON lines) as the
        /// run goes; questions already in it are not asked again, so a stopped run resumes.
        #[arg(long)]
        records: Option<PathBuf>,
        /// Ask only every N-th question starting at I ("I/N"), so that N processes with one
        /// thread each can share a machine; concatenate their --records files and run once more
        /// with the whole file to get the report of all questions.
        #[arg(long, value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
        /// squad: titles of the articles to index and ask about (never ones trained or
        /// calibrated on).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "Normans,Steam_engine,Harvard_University,Immune_system,Force"
        )]
        articles: Vec<String>,
        /// squad, rust-docs: ask every N-th question only.
        #[arg(long, default_value_t = 1)]
        every: usize,
        /// squad, rust-docs: answer modes to score (quote, rag, no_rag); "rag" and "no_rag" run
        /// with the base model, "rag-tuned" and "no_rag-tuned" with the shipped adapter.
        #[arg(long, value_delimiter = ',', default_value = "quote")]
        modes: Vec<String>,
        /// squad, rust-docs: keep the indexed collection in this file and load it from there
        /// next time instead of indexing again (it is rebuilt when it cannot be read).
        #[arg(long)]
        index_cache: Option<PathBuf>,
    },
    /// Fit the evidence ranker and the support gate on SQuAD articles (never ones you report on)
    /// and print the constants for `rag::evidence`.
    Calibrate {
        /// A SQuAD 2.0 file (it needs unanswerable questions to fit the gate).
        file: PathBuf,
        /// Titles of the articles to use; they are indexed together as one collection.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "Computational_complexity_theory,1973_oil_crisis,Yuan_dynasty,Islamism"
        )]
        articles: Vec<String>,
        /// Ask every N-th question only.
        #[arg(long, default_value_t = 1)]
        every: usize,
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// The gate's threshold abstains on at most this share of answerable questions.
        #[arg(long, default_value_t = 0.15)]
        max_wrong_abstain: f64,
        #[arg(long)]
        json: bool,
        /// A SQuAD file of other articles whose questions are asked of this collection too, as
        /// unanswerable ones (never a file or article you report on).
        #[arg(long)]
        foreign: Option<PathBuf>,
        /// Ask every N-th question of --foreign.
        #[arg(long, default_value_t = 8)]
        foreign_every: usize,
        /// Also ask every N-th answerable question with its answer taken out of what retrieval
        /// finds, as an unanswerable near miss (0: never).
        #[arg(long, default_value_t = 0)]
        near_miss_every: usize,
    },
    /// Rewrite a GGUF model's tensors from one quantization to another.
    Requantize {
        #[arg(long, default_value = "q4_1")]
        from: String,
        #[arg(long, default_value = "q8_0")]
        to: String,
        input: PathBuf,
        output: PathBuf,
    },
}

fn main() {
    restore_broken_pipe();
    let cli = Cli::parse();
    READ.store(cli.read, std::sync::atomic::Ordering::Relaxed);
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
            low_memory,
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
            let weights = if low_memory { Weights::Quantized } else { Weights::QuantizedAndDense };
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
            let tmp = output.with_extension("part");
            std::fs::write(&tmp, &out).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &output)?;
            eprintln!("wrote {} ({} bytes)", output.display(), out.len());
            Ok(())
        }
        Command::Tune { config, data, fold, out, resume, stop_after, limit } => {
            tune(&cli.models, &config, &data, fold, &out, resume, stop_after, limit)
        }
        Command::Adapter { file, f16_out } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let adapter = pocketrag::llm::lora::Adapter::from_bytes(&bytes, &file.display().to_string())?;
            let params: usize = adapter.pairs.values().map(|p| p.a.elem_count() + p.b.elem_count()).sum();
            let summary = serde_json::json!({
                "config": adapter.config,
                "matrices": adapter.pairs.len(),
                "parameters": params,
                "info": adapter.info,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
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

#[allow(clippy::too_many_arguments)]
fn tune(
    models_dir: &Path,
    config: &Path,
    data_path: &Path,
    fold: Option<usize>,
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    limit: Option<usize>,
) -> Result<()> {
    use pocketrag::tune::{data, train, TuneConfig};
    let cfg_text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let cfg = TuneConfig::from_json(&cfg_text)?;
    let data_bytes = std::fs::read(data_path).with_context(|| format!("cannot read {}", data_path.display()))?;
    let entries = data::read_pubmedqa(&data_bytes, &data_path.display().to_string())?;
    let folds = data::folds(&entries, cfg.data.folds);
    if let Some(f) = fold.filter(|&f| f >= cfg.data.folds) {
        bail!("--fold {f}: the config splits the data into {} folds (0..{})", cfg.data.folds, cfg.data.folds - 1);
    }
    let mut train_entries: Vec<&data::QaEntry> =
        entries.iter().zip(&folds).filter(|(_, &f)| Some(f) != fold).map(|(e, _)| e).collect();
    if let Some(n) = limit {
        train_entries.truncate(n);
    }
    let held_out: Vec<&data::QaEntry> = entries
        .iter()
        .zip(&folds)
        .filter(|(_, &f)| Some(f) == fold)
        .map(|(e, _)| e)
        .take(cfg.data.validation_examples)
        .collect();

    let base_path = models::generator_path(models_dir);
    let base_bytes = models::read(&base_path)?;
    let generator = pocketrag::llm::Generator::from_gguf_bytes_with(
        &base_bytes,
        &base_path.display().to_string(),
        Weights::QuantizedAndDense,
    )?;
    let mut engine = Engine::new(models::load_embedder(models_dir)?, Some(generator));
    // Training prompts retrieve from the training questions' abstracts only.
    let bar = counting_bar(train_entries.len(), "abstracts indexed");
    data::index_entries(&mut engine, &train_entries, &mut |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    let (examples, stats) = data::build_examples(
        &engine,
        &train_entries,
        cfg.data.sources,
        cfg.data.no_answer_fraction,
        cfg.max_seq_len,
        cfg.seed,
    )?;
    eprintln!("training examples: {}", serde_json::to_string(&stats)?);
    let validation = if held_out.is_empty() {
        vec![]
    } else {
        // Held-out examples retrieve among the held-out abstracts only.
        let mut v_engine = Engine::new(models::load_embedder(models_dir)?, engine.take_generator());
        data::index_entries(&mut v_engine, &held_out, &mut |_, _| {})?;
        let built = data::build_examples(
            &v_engine,
            &held_out,
            cfg.data.sources,
            cfg.data.no_answer_fraction,
            cfg.max_seq_len,
            cfg.seed + 1,
        );
        engine.set_generator(v_engine.take_generator());
        built?.0
    };

    let mut info = std::collections::BTreeMap::new();
    info.insert("name".to_string(), "pocketrag-pubmedqa-lora".to_string());
    info.insert("base_model".to_string(), models::GENERATOR_FILE.to_string());
    info.insert("base_sha256".to_string(), models::sha256_hex(&base_bytes));
    info.insert(
        "data_file".to_string(),
        data_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
    );
    info.insert("data_sha256".to_string(), models::sha256_hex(&data_bytes));
    info.insert("folds".to_string(), cfg.data.folds.to_string());
    info.insert("holdout_fold".to_string(), fold.map_or("none".to_string(), |f| f.to_string()));
    info.insert("train_questions".to_string(), train_entries.len().to_string());
    info.insert("examples".to_string(), serde_json::to_string(&stats)?);
    let model = engine.generator_mut().expect("loaded above").model_mut();
    let run = train::RunOptions { dir: out, resume, stop_after };
    let (_, summary) = train::train(model, &examples, &validation, &cfg, &info, &run, &mut |line| eprintln!("{line}"))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn evaluate(
    models_dir: &Path,
    file: &Path,
    limit: Option<usize>,
    json: bool,
    adapters: &[PathBuf],
    k: usize,
    max_tokens: usize,
    records_path: Option<&Path>,
    shard: Option<(usize, usize)>,
) -> Result<()> {
    use pocketrag::tune::data;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // The corpus is every entry of the file, even with --limit: distractors stay the same.
    let all = data::read_pubmedqa(&bytes, &file.display().to_string())?;
    let file_sha = models::sha256_hex(&bytes);
    let default_adapter = models_dir.join(models::ADAPTER_FILE);
    let paths: Vec<PathBuf> = if adapters.is_empty() { vec![default_adapter] } else { adapters.to_vec() };
    let mut loaded = Vec::new();
    for p in &paths {
        let b = std::fs::read(p).with_context(|| format!("cannot read adapter {}", p.display()))?;
        loaded.push(pocketrag::llm::lora::Adapter::from_bytes(&b, &p.display().to_string())?);
    }
    // Fold assignment needs the whole file, so adapters are matched before --limit applies.
    let assigned = pocketrag::eval::assign_adapters(&all, &file_sha, &loaded)?;
    let (shard_i, shard_n) = shard.unwrap_or((0, 1));
    let (entries, assigned): (Vec<&data::QaEntry>, Vec<usize>) = all
        .iter()
        .zip(assigned)
        .take(limit.unwrap_or(all.len()))
        .enumerate()
        .filter(|(i, _)| i % shard_n == shard_i)
        .map(|(_, pair)| pair)
        .unzip();
    let generator = models::load_generator_with(&models::generator_path(models_dir), Weights::QuantizedAndDense)?;
    let mut engine = Engine::new(models::load_embedder(models_dir)?, Some(generator));
    engine.settings.generate.max_tokens = max_tokens;
    let refs: Vec<&data::QaEntry> = all.iter().collect();
    let bar = counting_bar(refs.len(), "abstracts indexed");
    data::index_entries(&mut engine, &refs, &mut |d, _| bar.set_position(d as u64))?;
    bar.finish_and_clear();
    // Records of an earlier, stopped run of the same file are kept and not asked again.
    let mut done: std::collections::HashMap<String, pocketrag::eval::Record> = std::collections::HashMap::new();
    if let Some(path) = records_path.filter(|p| p.exists()) {
        for (i, line) in std::fs::read_to_string(path)?.lines().enumerate() {
            let r: pocketrag::eval::Record = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not an eval record", path.display(), i + 1))?;
            done.insert(r.id.clone(), r);
        }
    }
    let mut out = match records_path {
        Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let clock = std::time::Instant::now();
    let bar = counting_bar(entries.len(), "questions, 4 answers each");
    let mut records = Vec::with_capacity(entries.len());
    for (entry, &a) in entries.iter().copied().zip(&assigned) {
        let record = match done.remove(&entry.id) {
            Some(r) => r,
            None => {
                let r = pocketrag::eval::evaluate_one(&mut engine, entry, &loaded[a], k)?;
                if let Some(f) = out.as_mut() {
                    writeln!(f, "{}", serde_json::to_string(&r)?)?;
                }
                r
            }
        };
        records.push(record);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = pocketrag::eval::report(&records, clock.elapsed().as_secs_f64());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", pocketrag::eval::table(&report));
    }
    Ok(())
}

/// Unanswerable questions that `calibrate` makes besides the file's own.
struct Unanswerable<'a> {
    foreign: Option<(&'a Path, usize)>,
    near_miss_every: usize,
}

#[allow(clippy::too_many_arguments)]
fn calibrate(
    models_dir: &Path,
    file: &Path,
    titles: &[String],
    every: usize,
    k: usize,
    max_wrong_abstain: f64,
    json: bool,
    extra: Unanswerable,
) -> Result<()> {
    use pocketrag::eval::{calibrate as cal, squad};
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let all = squad::read(&bytes, &file.display().to_string())?;
    let articles: Vec<&squad::Article> = titles
        .iter()
        .map(|t| all.iter().find(|a| &a.title == t).with_context(|| format!("{}: no article {t:?}", file.display())))
        .collect::<Result<_>>()?;
    let generator = models::generator_path(models_dir);
    let mut engine = open(models_dir, None, reading().then_some((generator.as_path(), Weights::QuantizedAndDense)))?;
    for a in &articles {
        let (name, text) = squad::document(a);
        engine.add_document(&name, text.as_bytes(), &mut |_, _| {})?;
    }
    let qas: Vec<&squad::Qa> =
        articles.iter().flat_map(|a| a.paragraphs.iter().flat_map(|p| &p.qas)).step_by(every.max(1)).collect();
    let bar = counting_bar(qas.len(), "questions");
    let mut obs = Vec::with_capacity(qas.len());
    for qa in qas {
        obs.push(cal::observe(&mut engine, qa, k)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if extra.near_miss_every > 0 {
        let qas: Vec<&squad::Qa> = articles
            .iter()
            .flat_map(|a| a.paragraphs.iter().flat_map(|p| &p.qas))
            .filter(|qa| qa.answerable())
            .step_by(extra.near_miss_every)
            .collect();
        let bar = counting_bar(qas.len(), "near misses");
        for qa in qas {
            obs.push(cal::observe_without_answer(&mut engine, qa, k)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    if let Some((path, every)) = extra.foreign {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let others = squad::read(&bytes, &path.display().to_string())?;
        let qas: Vec<&squad::Qa> = others
            .iter()
            .filter(|a| !titles.contains(&a.title))
            .flat_map(|a| a.paragraphs.iter().flat_map(|p| &p.qas))
            .filter(|qa| qa.answerable())
            .step_by(every.max(1))
            .collect();
        let bar = counting_bar(qas.len(), "foreign questions");
        for qa in qas {
            obs.push(cal::observe_foreign(&mut engine, qa, k)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let c = cal::calibrate(obs, max_wrong_abstain);
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!(
            "{} questions ({} answerable) from {}\n\
             best sentence holds a gold answer: {:.3} before fitting, {:.3} after (top 2: {:.3}, top 3: {:.3})\n\
             gate at {:.3}: abstains on {:.3} of unanswerable questions (precision {:.3}), wrongly on {:.3} of answerable\n\
             and on {:.3} of {} constructed unanswerable questions (near misses, other articles' questions)\n",
            c.questions,
            c.answerable,
            titles.join(", "),
            c.top1_before,
            c.top1,
            c.top2,
            c.top3,
            c.gate_threshold,
            c.abstain_recall,
            c.abstain_precision,
            c.wrongly_abstained,
            c.foreign_abstained,
            c.foreign
        );
        println!("quoted answers (after fitting): relative bar, answers holding a gold answer, sentences quoted");
        for (r, hit, quoted) in &c.selection {
            println!("  {r:.1}  {hit:.3}  {quoted:.2}");
        }
        print!("{}", cal::constants(&c, if engine.reads() { "READ_" } else { "" }));
    }
    Ok(())
}

/// Which question set `evaluate_qa` reads, and how much of it.
struct QaSet<'a> {
    format: &'a str,
    file: &'a Path,
    articles: &'a [String],
    every: usize,
    limit: Option<usize>,
}

/// The documents and questions of a question set: (name, bytes) pairs to index, and the
/// questions.
fn qa_set(set: &QaSet) -> Result<(Vec<(String, Vec<u8>)>, Vec<pocketrag::eval::qa::Question>)> {
    use pocketrag::eval::{qa, squad};
    let bytes = std::fs::read(set.file).with_context(|| format!("cannot read {}", set.file.display()))?;
    let (docs, mut questions) = if set.format == "squad" {
        let all = squad::read(&bytes, &set.file.display().to_string())?;
        let mut picked = Vec::new();
        for title in set.articles {
            let a = all.iter().find(|a| &a.title == title);
            picked.push(a.with_context(|| format!("{}: no article {title:?}", set.file.display()))?.clone());
        }
        let docs = picked.iter().map(squad::document).map(|(name, text)| (name, text.into_bytes())).collect();
        (docs, qa::squad_questions(&picked, set.every))
    } else {
        #[derive(serde::Deserialize)]
        struct Set {
            books: std::collections::BTreeMap<String, PathBuf>,
            questions: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
            question: String,
            answers: Vec<String>,
            kind: Option<String>,
        }
        let s: Set = serde_json::from_slice(&bytes).with_context(|| format!("{}", set.file.display()))?;
        let mut docs = Vec::new();
        for (book, dir) in &s.books {
            let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| {
                    format!("book {book}: cannot read {} (rustup component add rust-docs)", dir.display())
                })?
                .collect::<std::io::Result<Vec<_>>>()?
                .into_iter()
                .map(|e| e.path())
                .collect();
            // Pages in subfolders too (the Edition Guide has one per edition).
            let mut i = 0;
            while i < pages.len() {
                if pages[i].is_dir() {
                    let dir = pages.remove(i);
                    for e in std::fs::read_dir(&dir)? {
                        pages.push(e?.path());
                    }
                } else {
                    i += 1;
                }
            }
            pages.retain(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".html") && !["print.html", "toc.html", "404.html"].contains(&name)
            });
            pages.sort();
            for page in pages {
                let rel = page.strip_prefix(dir).unwrap_or(&page).display().to_string();
                docs.push((format!("{book}/{rel}"), std::fs::read(&page)?));
            }
        }
        let questions = s
            .questions
            .into_iter()
            .step_by(set.every.max(1))
            .map(|e| qa::Question { id: e.id, question: e.question, answers: e.answers, kind: e.kind })
            .collect();
        (docs, questions)
    };
    if let Some(n) = set.limit {
        questions.truncate(n);
    }
    Ok((docs, questions))
}

fn evaluate_qa(
    models_dir: &Path,
    set: &QaSet,
    modes: &[String],
    k: usize,
    max_tokens: usize,
    json: bool,
    records: Option<&Path>,
    index_cache: Option<&Path>,
) -> Result<()> {
    use pocketrag::eval::qa;
    let configs: Vec<(Mode, bool, &str)> = modes
        .iter()
        .map(|m| {
            let (name, tuned) = m.strip_suffix("-tuned").map_or((m.as_str(), false), |n| (n, true));
            Ok((Mode::parse(name)?, tuned, m.as_str()))
        })
        .collect::<Result<_>>()?;
    let wants_model = reading() || configs.iter().any(|(m, _, _)| m.uses_model());
    let generator = models::generator_path(models_dir);
    let mut engine = open(models_dir, None, wants_model.then_some((generator.as_path(), Weights::QuantizedAndDense)))?;
    if configs.iter().any(|(_, tuned, _)| *tuned) {
        let path = models_dir.join(models::ADAPTER_FILE);
        let bytes = models::read(&path)?;
        engine.load_adapter(pocketrag::llm::lora::Adapter::from_bytes(&bytes, &path.display().to_string())?)?;
    }
    engine.settings.generate.max_tokens = max_tokens;
    let (docs, questions) = qa_set(set)?;
    // A cache made from other documents (another set, other books) is not used.
    let cache = index_cache.and_then(|p| std::fs::read(p).ok()).filter(|bytes| {
        let Ok(lib) = pocketrag::library::Library::load(bytes, &engine.library().embedder) else { return false };
        let mut names: Vec<&str> = lib.documents().iter().map(|d| d.name.as_str()).collect();
        let mut wanted: Vec<&str> = docs.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        wanted.sort_unstable();
        names == wanted
    });
    let cached = cache.is_some_and(|bytes| engine.load(&bytes).is_ok());
    if !cached {
        let bar = counting_bar(docs.len(), "documents indexed");
        for (name, bytes) in &docs {
            engine.add_document(name, bytes, &mut |_, _| {}).with_context(|| name.clone())?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(path) = index_cache {
            write_atomically(path, &engine.save()?)?;
        }
    }
    let mut out = records.map(std::fs::File::create).transpose()?;
    let mut rows = Vec::new();
    for (mode, tuned, name) in &configs {
        if mode.uses_model() {
            engine.use_adapter(*tuned)?;
        }
        let bar = counting_bar(questions.len(), &format!("questions ({name})"));
        let mut got = Vec::new();
        for q in &questions {
            let r = qa::ask(&mut engine, q, *mode, k).with_context(|| format!("question {}", q.id))?;
            if let Some(f) = out.as_mut() {
                writeln!(f, "{}", serde_json::to_string(&r)?)?;
            }
            got.push(r);
            bar.inc(1);
        }
        bar.finish_and_clear();
        rows.push((name.to_string(), qa::score(&got)));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{} documents, {} questions ({} answerable) from {}",
            docs.len(),
            questions.len(),
            questions.iter().filter(|q| q.answerable()).count(),
            set.file.display()
        );
        print!("{}", qa::table(&rows));
    }
    Ok(())
}

fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("{s:?}: a shard is I/N with 0 <= I < N, e.g. 0/2");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
    if i < n {
        Ok((i, n))
    } else {
        Err(bad())
    }
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

fn index(models_dir: &Path, out: &Path, fresh: bool, backend: Backend, paths: &[PathBuf]) -> Result<()> {
    let existing = if out.exists() && !fresh { Some(out) } else { None };
    let mut engine = open(models_dir, existing, None).map_err(|e| e.context("use --fresh to start a new index"))?;
    if backend == Backend::Gpu {
        let gpu = pocketrag::gpu::now(pocketrag::gpu::Gpu::new())??;
        let description = gpu.describe();
        let weights = models::read(&models_dir.join(models::EMBEDDER_DIR).join("model.safetensors"))?;
        pocketrag::gpu::now(engine.embedder_mut().use_gpu(std::sync::Arc::new(gpu), &weights))??;
        eprintln!("embedding on the GPU: {description}");
    }
    let (files, left_out) = collect_files(paths)?;
    // A file in a folder that is not a document type is named, not passed over in silence.
    for (i, f) in left_out.iter().enumerate() {
        if i == LEFT_OUT_SHOWN {
            eprintln!("... and {} more files left out", left_out.len() - LEFT_OUT_SHOWN);
            break;
        }
        let ext = f.extension().map_or(String::from("no extension"), |e| format!(".{}", e.to_string_lossy()));
        eprintln!("left out {}: not a document type pocketrag reads ({ext})", f.display());
    }
    if files.is_empty() {
        bail!("no documents found in the given paths");
    }
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} files  {msg}").expect("valid template"));
    let mut failed = 0;
    let mut chunks = 0;
    for file in &files {
        // Documents are named by the path they were given by; "./" adds nothing to a name.
        let name = file.strip_prefix(".").unwrap_or(file).display().to_string();
        bar.set_message(name.clone());
        let result = read_document(file).and_then(|bytes| {
            let b = bar.clone();
            let shown = name.clone();
            engine
                .add_document(&name, &bytes, &mut |done, total| {
                    b.set_message(format!("{shown}: {done}/{total} chunks"))
                })
                .map_err(anyhow::Error::from)
        });
        match result {
            Ok(report) => chunks += report.chunks,
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("skipped {e:#}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // The graph is built here, once, and saved with the index: a search then loads it instead
    // of scanning every vector (below `HnswConfig::exact_below` chunks there is none to build).
    let clock = std::time::Instant::now();
    if engine.maintain() {
        eprintln!(
            "built the search graph over {} chunks in {:.1} s",
            engine.library().chunk_count(),
            clock.elapsed().as_secs_f64()
        );
    }
    let bytes = engine.save()?;
    let tmp = out.with_extension("part");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)?;
    let lib = engine.library();
    eprintln!(
        "indexed {} files ({chunks} chunks) into {}; {} documents, {} chunks in total{}",
        files.len() - failed,
        out.display(),
        lib.documents().len(),
        lib.chunk_count(),
        if failed > 0 { format!("; {failed} skipped") } else { String::new() }
    );
    if failed == files.len() {
        bail!("no file could be indexed");
    }
    Ok(())
}

fn read_document(path: &Path) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.len();
    if size as usize > MAX_DOCUMENT_BYTES {
        bail!("{}: file is {} MB; the limit is {} MB", path.display(), size >> 20, MAX_DOCUMENT_BYTES >> 20);
    }
    std::fs::read(path).with_context(|| format!("{}", path.display()))
}

/// How many left-out files `index` names one by one.
const LEFT_OUT_SHOWN: usize = 20;

/// Files named directly are taken as they are; folders contribute the document types we parse.
/// Returns the files to index and the visible files of the folders that are left out.
fn collect_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    const EXTENSIONS: &[&str] = &["txt", "text", "md", "markdown", "html", "htm", "xhtml", "pdf", "rst"];
    let mut files = Vec::new();
    let mut left_out = Vec::new();
    for p in paths {
        if p.is_dir() {
            // Hidden files and folders (.git, editor swap files) are not documents; the folder
            // given may itself be "." and is walked.
            let visible = |e: &walkdir::DirEntry| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.');
            for entry in walkdir::WalkDir::new(p).sort_by_file_name().into_iter().filter_entry(visible) {
                let entry = entry?;
                let path = entry.path();
                let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                if entry.file_type().is_file() {
                    if EXTENSIONS.contains(&ext.as_str()) {
                        files.push(path.to_path_buf());
                    } else {
                        left_out.push(path.to_path_buf());
                    }
                }
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok((files, left_out))
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
