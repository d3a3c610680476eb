//! `pocketrag eval` and `pocketrag calibrate`: the question sets asked, scored and printed.

use crate::args::{prompt_weights, reading};
use crate::{counting_bar, open, write_atomically};
use anyhow::{Context, Result};
use pocketrag::models;
use std::io::Write;
use std::path::{Path, PathBuf};

#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
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
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let default_adapter = models_dir.join(models::ADAPTER_FILE);
    let paths: Vec<PathBuf> = if adapters.is_empty() { vec![default_adapter] } else { adapters.to_vec() };
    let mut loaded = Vec::new();
    for p in &paths {
        let b = std::fs::read(p).with_context(|| format!("cannot read adapter {}", p.display()))?;
        loaded.push(pocketrag::llm::lora::Adapter::from_bytes(&b, &p.display().to_string())?);
    }
    // Records of an earlier, stopped run of the same file are kept and not asked again.
    let mut done = std::collections::HashMap::new();
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
    let options = pocketrag::eval::RunOptions { limit, k, max_tokens, shard: shard.unwrap_or((0, 1)) };
    let clock = std::time::Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let records = pocketrag::eval::run(
        models_dir,
        &bytes,
        &file.display().to_string(),
        &loaded,
        &options,
        done,
        &mut |r| append_record(out.as_mut(), r),
        // Each stage starts counting at 1: a new bar for it.
        &mut |what, d, total| stage_bar(&mut bar, what, d, total),
    )?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let report = pocketrag::eval::report(&records, clock.elapsed().as_secs_f64());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", pocketrag::eval::table(&report));
    }
    Ok(())
}

/// Unanswerable questions that `calibrate` makes besides the file's own.
pub(crate) struct Unanswerable<'a> {
    pub(crate) foreign: Option<(&'a Path, usize)>,
    pub(crate) near_miss_every: usize,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn calibrate(
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
    let others = match extra.foreign {
        Some((path, _)) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            squad::read(&bytes, &path.display().to_string())?
        }
        None => vec![],
    };
    let generator = models::generator_path(models_dir);
    let mut engine = open(models_dir, None, reading().then_some((generator.as_path(), prompt_weights())))?;
    let wanted = cal::Extra {
        near_miss_every: extra.near_miss_every,
        foreign: extra.foreign.map(|(_, every)| (others.as_slice(), every)),
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let obs = cal::observe_set(&mut engine, &articles, every, k, &wanted, &mut |what, d, total| {
        stage_bar(&mut bar, what, d, total)
    })?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let c = cal::calibrate(obs, max_wrong_abstain);
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", cal::summary(&c, titles));
        print!("{}", cal::constants(&c, if engine.reads() { "READ_" } else { "" }));
    }
    Ok(())
}

/// Which question set `evaluate_qa` reads, and how much of it.
pub(crate) struct QaSet<'a> {
    pub(crate) format: &'a str,
    pub(crate) file: &'a Path,
    pub(crate) articles: &'a [String],
    pub(crate) every: usize,
    pub(crate) limit: Option<usize>,
}

/// The documents and questions of a question set: (name, bytes) pairs to index, and the
/// questions.
pub(crate) fn qa_set(set: &QaSet) -> Result<(Vec<(String, Vec<u8>)>, Vec<pocketrag::eval::qa::Question>)> {
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

pub(crate) fn evaluate_qa(
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
    let configs: Vec<qa::Config> = modes.iter().map(|m| qa::Config::parse(m)).collect::<pocketrag::Result<_>>()?;
    let wants_model = reading() || configs.iter().any(|c| c.mode.uses_model());
    let generator = models::generator_path(models_dir);
    let mut engine = open(models_dir, None, wants_model.then_some((generator.as_path(), prompt_weights())))?;
    if configs.iter().any(|c| c.tuned) {
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
        qa::index_set(&mut engine, &docs, &mut |done, _| bar.set_position(done as u64))?;
        bar.finish_and_clear();
        if let Some(path) = index_cache {
            write_atomically(path, &engine.save()?)?;
        }
    }
    let mut out = records.map(std::fs::File::create).transpose()?;
    // One bar per config: `run` reports each config's questions from 1.
    let mut bar: Option<indicatif::ProgressBar> = None;
    let rows = qa::run(
        &mut engine,
        &questions,
        &configs,
        k,
        &mut |r| append_record(out.as_mut(), r),
        &mut |name, done, total| stage_bar(&mut bar, &format!("questions ({name})"), done, total),
    )?;
    bar.inspect(|b| b.finish_and_clear());
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

pub(crate) fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("{s:?}: a shard is I/N with 0 <= I < N, e.g. 0/2");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
    if i < n {
        Ok((i, n))
    } else {
        Err(bad())
    }
}

/// One JSON line per record, to the --records file when there is one.
fn append_record<T: serde::Serialize>(out: Option<&mut std::fs::File>, record: &T) -> pocketrag::Result<()> {
    if let Some(f) = out {
        let line = serde_json::to_string(record).map_err(|e| pocketrag::Error::Internal(e.to_string()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// Progress of a run in stages, each counted from 1: a new bar when a stage starts.
fn stage_bar(bar: &mut Option<indicatif::ProgressBar>, what: &str, done: usize, total: usize) {
    if done == 1 {
        bar.take().inspect(|b| b.finish_and_clear());
    }
    bar.get_or_insert_with(|| counting_bar(total, what)).set_position(done as u64);
}
