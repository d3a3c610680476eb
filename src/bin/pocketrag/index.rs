//! `pocketrag index`: files and folders read, indexed and saved, each failure named.

use crate::{open, write_atomically};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pocketrag::gpu::Backend;
use pocketrag::ingest::MAX_DOCUMENT_BYTES;
use pocketrag::models;
use std::path::{Path, PathBuf};

pub(crate) fn index(models_dir: &Path, out: &Path, fresh: bool, backend: Backend, paths: &[PathBuf]) -> Result<()> {
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
    write_atomically(out, &bytes)?;
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

pub(crate) fn read_document(path: &Path) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.len();
    if size as usize > MAX_DOCUMENT_BYTES {
        bail!("{}: file is {} MB; the limit is {} MB", path.display(), size >> 20, MAX_DOCUMENT_BYTES >> 20);
    }
    std::fs::read(path).with_context(|| format!("{}", path.display()))
}

/// How many left-out files `index` names one by one.
pub(crate) const LEFT_OUT_SHOWN: usize = 20;

/// Files named directly are taken as they are; folders contribute the document types we parse.
/// Returns the files to index and the visible files of the folders that are left out.
pub(crate) fn collect_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
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
