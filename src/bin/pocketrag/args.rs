//! The command line's arguments and subcommands, as clap reads them.

use crate::evaluate::parse_shard;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use pocketrag::eval::squad;
use pocketrag::gpu::Backend;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pocketrag",
    version,
    about = "Private document Q&A: index files, search them, ask questions with cited answers"
)]
pub(crate) struct Cli {
    /// Folder holding the fetched models (see `make models`).
    #[arg(long, global = true, default_value = "models", env = "POCKETRAG_MODELS")]
    pub(crate) models: PathBuf,
    /// In the default mode, let the support gate read the best sentence with the language model
    /// (loads it; README, "Abstention"). Off by default: measured, it did not help yet.
    #[arg(long, global = true)]
    pub(crate) read: bool,
    /// Read prompts with the 8-bit weights only, instead of f32 copies (natively ~2x slower
    /// prompt reading, ~425 MB less memory); `ask`, `eval` and `eval-qa`.
    #[arg(long, global = true)]
    pub(crate) low_memory: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--read`, set once in `main`, read wherever an engine is opened.
pub(crate) static READ: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn reading() -> bool {
    READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// `--low-memory`, set once in `main`.
pub(crate) static LOW_MEMORY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The generator's weights for reading prompts, as `--low-memory` asks.
pub(crate) fn prompt_weights() -> pocketrag::llm::llama::Weights {
    use pocketrag::llm::llama::Weights;
    if LOW_MEMORY.load(std::sync::atomic::Ordering::Relaxed) {
        Weights::Quantized
    } else {
        Weights::QuantizedAndDense
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        #[arg(long, default_value_t = Backend::Cpu, value_parser = backend())]
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
        /// Answer with our fine-tuned model (the merged GGUF that `make models` writes).
        #[arg(long, conflicts_with = "model")]
        tuned: bool,
        /// Apply this LoRA adapter at load time (e.g. a checkpoint of `pocketrag tune`).
        #[arg(long, conflicts_with = "tuned")]
        adapter: Option<PathBuf>,
        /// Where the language model runs: `gpu` uses our WGSL kernels through wgpu (Vulkan,
        /// Metal or DX12), after a self-test against the CPU; it fails with the reason if there
        /// is no usable GPU.
        #[arg(long, default_value_t = Backend::Cpu, value_parser = backend())]
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
        #[arg(long, value_delimiter = ',', default_value = squad::REPORT_ARTICLES)]
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
        #[arg(long, value_delimiter = ',', default_value = squad::CALIBRATION_ARTICLES)]
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

/// `cpu` or `gpu`, listed in `--help`, read into the library's [`Backend`].
fn backend() -> impl TypedValueParser<Value = Backend> {
    PossibleValuesParser::new(["cpu", "gpu"]).try_map(|s| s.parse::<Backend>())
}
