//! The native command line: argument parsing, progress bars and terminal output over the same
//! `Engine` the browser uses.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pocketrag::ingest::MAX_DOCUMENT_BYTES;
use pocketrag::llm::llama::Weights;
use pocketrag::{models, Engine, Mode};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    #[command(subcommand)]
    command: Command,
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
        #[arg(long)]
        no_rag: bool,
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
        question: String,
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
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Index { out, fresh, paths } => index(&cli.models, &out, fresh, &paths),
        Command::Search { index, k, json, query } => {
            let engine = open(&cli.models, Some(&index), None)?;
            let found = engine.search(&query, k)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found.hits)?);
            } else {
                for (i, h) in found.hits.iter().enumerate() {
                    println!("{:>2}. {:.3}  {}{}", i + 1, h.score, h.doc, location(h.page, h.heading.as_deref()));
                    println!("    {}", one_line(&h.text, 200));
                }
            }
            Ok(())
        }
        Command::Ask { index, k, no_rag, json, temperature, top_p, seed, max_tokens, model, low_memory, question } => {
            let model = model.unwrap_or_else(|| models::generator_path(&cli.models));
            if !no_rag && index.is_none() {
                bail!("--index is required unless --no-rag is given");
            }
            let weights = if low_memory { Weights::Quantized } else { Weights::QuantizedAndDense };
            let mut engine = open(&cli.models, index.as_deref(), Some((&model, weights)))?;
            let g = &mut engine.settings.generate;
            g.temperature = temperature;
            g.top_p = top_p;
            g.seed = seed;
            g.max_tokens = max_tokens;
            let mode = if no_rag { Mode::NoRag } else { Mode::Rag };
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
                        "[{}] {}{}  (score {:.3})",
                        c.n,
                        c.source.doc,
                        location(c.source.page, c.source.heading.as_deref()),
                        c.source.score
                    );
                    println!("    {}", one_line(&c.source.text, 200));
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
    }
}

/// Build an engine: the embedder always, an index and the generator when given.
fn open(models_dir: &Path, index: Option<&Path>, generator: Option<(&Path, Weights)>) -> Result<Engine> {
    let embedder = models::load_embedder(models_dir)?;
    let generator = generator.map(|(path, weights)| models::load_generator_with(path, weights)).transpose()?;
    let mut engine = Engine::new(embedder, generator);
    if let Some(path) = index {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read index {}", path.display()))?;
        engine.load(&bytes).with_context(|| format!("{}", path.display()))?;
    }
    Ok(engine)
}

fn index(models_dir: &Path, out: &Path, fresh: bool, paths: &[PathBuf]) -> Result<()> {
    let existing = if out.exists() && !fresh { Some(out) } else { None };
    let mut engine = open(models_dir, existing, None).map_err(|e| e.context("use --fresh to start a new index"))?;
    let files = collect_files(paths)?;
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
    let bytes = engine.save();
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

/// Files named directly are taken as they are; folders contribute the document types we parse.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    const EXTENSIONS: &[&str] = &["txt", "text", "md", "markdown", "html", "htm", "xhtml", "pdf", "rst"];
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            // Hidden files and folders (.git, editor swap files) are not documents; the folder
            // given may itself be "." and is walked.
            let visible = |e: &walkdir::DirEntry| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.');
            for entry in walkdir::WalkDir::new(p).sort_by_file_name().into_iter().filter_entry(visible) {
                let entry = entry?;
                let path = entry.path();
                let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                if entry.file_type().is_file() && EXTENSIONS.contains(&ext.as_str()) {
                    files.push(path.to_path_buf());
                }
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(files)
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
