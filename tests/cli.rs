//! The command line as a user drives it: JSON shapes, per-file errors, and clear failures (no
//! panics, non-zero exit) for bad models, bad index files and empty questions.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pocketrag"));
    c.arg("--models").arg(common::models_dir());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run pocketrag")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// A scratch path private to this process and test (tests run in parallel threads).
fn tmp(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pocketrag-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/library")
}

fn build_index(test: &str) -> PathBuf {
    let out = tmp(test, "lib.idx");
    // A folder with the good documents, plus files that must be skipped with a reason.
    let bad = tmp(test, "bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("junk.txt"), [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    std::fs::write(bad.join("empty.md"), "   \n").unwrap();
    std::fs::write(bad.join("broken.pdf"), b"%PDF-1.7\nnot really a pdf").unwrap();
    // 200 KB of bytes that are no document, under a name that is no document type.
    let junk: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(bad.join("junk.bin"), junk).unwrap();
    let o = run(bin().args(["index", "--fresh", "--out"]).arg(&out).arg(library()).arg(&bad));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for f in ["junk.txt", "empty.md", "broken.pdf", "junk.bin"] {
        assert!(err.contains(f), "no message for {f}: {err}");
    }
    assert!(err.contains("indexed 3 files"), "{err}");
    out
}

#[test]
fn index_search_ask_json() {
    let idx = build_index("json");
    let o = run(bin().args(["search", "--json", "--k", "3", "--index"]).arg(&idx).arg("sourdough starter hooch"));
    assert!(o.status.success(), "{}", stderr(&o));
    let found: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // A few chunks: below the size where a graph pays, so every vector was compared.
    assert_eq!(found["index"], "exact", "{found}");
    let hits = found["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    assert!(hits[0]["doc"].as_str().unwrap().ends_with("sourdough.txt"));
    assert!(hits[0]["text"].as_str().unwrap().contains("hooch"));
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores[0] > 0.3);

    // The default mode quotes the document.
    let o =
        run(bin().args(["ask", "--json", "--index"]).arg(&idx).arg("When was the Harrow Point lighthouse first lit?"));
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["mode"], "quote", "{a}");
    assert_eq!(a["abstained"], false, "{a}");
    assert!(a["answer"].as_str().unwrap().contains("1871"), "{a}");
    let c = &a["citations"][0];
    assert_eq!(c["by"], "quote", "{a}");
    // Markdown's line breaks are spaces in the extracted text.
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let file = words(&std::fs::read_to_string(library().join("lighthouse.md")).unwrap());
    let quote = c["quote"].as_str().unwrap();
    assert!(quote.contains("1871") && file.contains(&words(quote)), "{a}");
    assert!(c["start"].as_u64().unwrap() < c["end"].as_u64().unwrap(), "{a}");
    assert!(a["support"].as_f64().unwrap() > 0.0 && a["evidence"].as_array().is_some_and(|e| !e.is_empty()), "{a}");

    // Free mode: the model writes, every sentence gets a support mark.
    let o = run(bin()
        .args(["ask", "--free", "--json", "--index"])
        .arg(&idx)
        .arg("When was the Harrow Point lighthouse first lit?"));
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!a["answer"].as_str().unwrap().is_empty());
    // Whether this CPU's greedy text cites anything is the model's business (see end_to_end.rs);
    // the shape of what is printed is ours.
    let s = &a["sources"][0];
    assert!(s["doc"].as_str().unwrap().ends_with("lighthouse.md"), "{a}");
    assert!(s["text"].as_str().unwrap().contains("1871") && s["score"].as_f64().unwrap() > 0.5, "{a}");
    for c in a["citations"].as_array().unwrap() {
        assert!(c["doc"].as_str().unwrap().ends_with("lighthouse.md"), "{a}");
        assert!(c["n"].as_u64().unwrap() >= 1 && c["text"].is_string() && c["score"].is_number());
        assert!(matches!(c["by"].as_str(), Some("model" | "match")), "{a}");
        assert!(c["quote"].is_string() && c["start"].is_number() && c["passage_start"].is_number(), "{a}");
    }
    assert_eq!(a["mode"], "rag", "{a}");
    assert!(a["sentences"].as_array().is_some_and(|s| !s.is_empty()), "{a}");
    assert!(a["prompt_tokens"].as_u64().unwrap() > 0 && a["generated_tokens"].as_u64().unwrap() > 0);
    for t in ["embed", "search", "prefill", "decode"] {
        assert!(a["timings_ms"][t].is_number(), "timings_ms.{t} missing: {a}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `pocketrag search … | head -1`: the reading end is closed before anything is printed.
    let idx = build_index("pipe");
    let mut child = bin()
        .args(["search", "--k", "10", "--index"])
        .arg(&idx)
        .arg("sourdough")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    // Ended by SIGPIPE (13), as `cat` or `grep` are: not an error exit, not a panic.
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(13), "{:?}: {err}", o.status);
    }
}

#[test]
fn bad_inputs_fail_clearly() {
    let idx = build_index("bad");
    let tmp = |name: &str| tmp("bad", name);
    // Empty question.
    assert_clean_failure(&run(bin().args(["search", "--index"]).arg(&idx).arg("   ")), "empty");
    // Index file from another version, damaged, or not an index at all.
    let good = std::fs::read(&idx).unwrap();
    let mut old = good.clone();
    old[16..20].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(tmp("old.idx"), &old).unwrap();
    assert_clean_failure(&run(bin().args(["search", "--index"]).arg(tmp("old.idx")).arg("q")), "different version");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(tmp("bad.idx"), &bad).unwrap();
    assert_clean_failure(&run(bin().args(["search", "--index"]).arg(tmp("bad.idx")).arg("q")), "damaged");
    std::fs::write(tmp("short.idx"), &good[..good.len() / 3]).unwrap();
    assert_clean_failure(&run(bin().args(["search", "--index"]).arg(tmp("short.idx")).arg("q")), "truncated");
    assert_clean_failure(
        &run(bin().args(["search", "--index"]).arg(library().join("sourdough.txt")).arg("q")),
        "not a pocketrag index",
    );
}

#[test]
fn broken_model_files_are_named() {
    let tmp = |name: &str| tmp("model", name);
    let real = std::fs::read(common::models_dir().join(pocketrag::models::GENERATOR_FILE)).unwrap();
    let truncated = tmp("truncated.gguf");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let junk = tmp("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all, just some words").unwrap();
    let wrong = common::models_dir().join("minilm/model.safetensors");
    for (path, why) in [(&truncated, "truncated"), (&junk, "not a readable GGUF"), (&wrong, "not a readable GGUF")] {
        let o = run(bin().args(["ask", "--no-rag", "--model"]).arg(path).arg("hi"));
        assert_clean_failure(&o, why);
        assert!(stderr(&o).contains(&path.display().to_string()), "file not named: {}", stderr(&o));
    }
    let o = run(bin().args(["ask", "--no-rag", "--model"]).arg(tmp("missing.gguf")).arg("hi"));
    assert_clean_failure(&o, "make models");
}

#[test]
fn eval_scores_retrieval_and_the_four_answer_configurations() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pubmedqa-mini.json");
    let o = run(bin().args(["eval", "--format", "pubmedqa", "--json", "--max-tokens", "48"]).arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n"], 4);
    // Each question of this file is about its own abstract only: it is found first.
    for key in ["recall@1", "recall@5", "mrr", "ndcg@10"] {
        assert_eq!(v["retrieval"][key], 1.0, "{key}: {v}");
    }
    for model in ["base", "tuned"] {
        for mode in ["no_rag", "rag"] {
            for score in ["accuracy", "cites_gold"] {
                let x = v["answers"][model][mode][score].as_f64().unwrap_or(-1.0);
                assert!((0.0..=1.0).contains(&x), "{model}/{mode}/{score}: {v}");
            }
        }
        // Without retrieval there is nothing to cite.
        assert_eq!(v["answers"][model]["no_rag"]["cites_gold"], 0.0);
    }
    assert_eq!(v["labels"], serde_json::json!({"maybe": 1, "no": 1, "yes": 2}));

    // Two shards, recorded, then one run over both records: the same report, with no question
    // asked twice (the last run generates nothing, so it must find all four in the records).
    let records = tmp("eval-shards", "all.jsonl");
    let mut joined = String::new();
    for shard in ["0/2", "1/2"] {
        let part = tmp("eval-shards", &format!("{}.jsonl", shard.replace('/', "-")));
        let _ = std::fs::remove_file(&part);
        let args = ["eval", "--json", "--max-tokens", "48", "--shard", shard, "--records"];
        let o = run(bin().args(args).arg(&part).arg(&data));
        assert!(o.status.success(), "{}", stderr(&o));
        let part_v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(part_v["n"], 2);
        joined += &std::fs::read_to_string(&part).unwrap();
    }
    std::fs::write(&records, joined).unwrap();
    let o = run(bin().args(["eval", "--json", "--max-tokens", "1", "--records"]).arg(&records).arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let merged: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(merged["retrieval"], v["retrieval"]);
    assert_eq!(merged["answers"], v["answers"]);
    let o = run(bin().args(["eval", "--shard", "2/2"]).arg(&data));
    assert!(!o.status.success() && stderr(&o).contains("a shard is I/N"), "{}", stderr(&o));

    let o = run(bin().args(["eval", "--format", "trec"]).arg(&data));
    assert_clean_failure(&o, "unknown --format");
    // A file of another format is named as such.
    let o = run(bin().args(["eval", "--format", "squad"]).arg(&data));
    assert_clean_failure(&o, "not a SQuAD-format file");
}

#[test]
fn eval_never_scores_the_tuned_model_on_its_own_training_questions() {
    use sha2::Digest;
    // A PubMedQA-format file of our own, and the shipped adapter with its provenance rewritten
    // to say it was trained on every question of that file (no fold held out): the adapter may
    // then answer none of them.
    let entry = |q: &str, context: &str, decision: &str| serde_json::json!({ "QUESTION": q, "CONTEXTS": [context], "final_decision": decision, "LONG_ANSWER": context });
    let data = serde_json::json!({
        "1": entry("Was the Harrow Point lighthouse lit in 1871?", "The lighthouse was first lit in 1871.", "yes"),
        "2": entry("Does a sourdough starter need daily feeding in the fridge?", "In the fridge it is fed weekly.", "no"),
    });
    let file = tmp("trained", "set.json");
    let bytes = serde_json::to_vec(&data).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();

    let shipped = std::fs::read(common::models_dir().join(pocketrag::models::ADAPTER_FILE)).unwrap();
    let n = u64::from_le_bytes(shipped[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&shipped[8..8 + n]).unwrap();
    let meta = header["__metadata__"].as_object_mut().unwrap();
    meta.insert("data_sha256".into(), sha.into());
    meta.remove("folds");
    meta.remove("holdout_fold");
    let header = serde_json::to_vec(&header).unwrap();
    let mut adapter = (header.len() as u64).to_le_bytes().to_vec();
    adapter.extend_from_slice(&header);
    adapter.extend_from_slice(&shipped[8 + n..]);
    let adapter_file = tmp("trained", "adapter.safetensors");
    std::fs::write(&adapter_file, adapter).unwrap();

    let o = run(bin().args(["eval", "--format", "pubmedqa", "--adapter"]).arg(&adapter_file).arg(&file));
    assert_clean_failure(&o, "was in the training data of every adapter given");
}

#[test]
fn eval_squad_scores_quoted_answers_and_every_quote_is_verbatim() {
    // A SQuAD-format file of our own text: one article, answerable and unanswerable questions.
    let para = |context: &str, qas: serde_json::Value| serde_json::json!({ "context": context, "qas": qas });
    let qa = |id: &str, q: &str, answers: &[&str]| {
        serde_json::json!({
            "id": id, "question": q, "is_impossible": answers.is_empty(),
            "answers": answers.iter().map(|a| serde_json::json!({ "text": a, "answer_start": 0 })).collect::<Vec<_>>()
        })
    };
    let data = serde_json::json!({ "version": "v2.0", "data": [{ "title": "Harrow_Point", "paragraphs": [
        para("The Harrow Point lighthouse stands on a granite spur at the northern tip of Kessel Island. It was lit for \
              the first time in 1871 and its lamp was converted from paraffin to electricity in 1936.",
             serde_json::json!([qa("a1", "When was the Harrow Point lighthouse first lit?", &["1871"]),
                                qa("a2", "When was the lighthouse lamp converted to electricity?", &["1936"])])),
        para("The last resident keeper, Marta Lindqvist, left the station in 1989 when the light was automated. She \
              kept a daily weather log for twenty-two years; the logs are now held by the island museum.",
             serde_json::json!([qa("a3", "Who was the last resident keeper of the lighthouse?", &["Marta Lindqvist"]),
                                qa("u1", "What is the capital of Peru?", &[])])),
    ]}]});
    let file = tmp("eval_squad", "set.json");
    std::fs::write(&file, serde_json::to_vec(&data).unwrap()).unwrap();
    let records = tmp("eval_squad", "records.jsonl");
    let o = run(bin()
        .args(["eval", "--format", "squad", "--articles", "Harrow_Point", "--json", "--records"])
        .arg(&records)
        .arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (config, scores) = (&rows[0][0], &rows[0][1]);
    assert_eq!(config, "quote");
    assert_eq!(scores["questions"], 4);
    assert_eq!(scores["answerable"], 3);
    assert_eq!(scores["quotes_not_verbatim"], 0, "{scores}");
    assert!(scores["correct"].as_f64().unwrap() >= 2.0 / 3.0, "{scores}");
    assert_eq!(scores["abstained_unanswerable"], 1.0, "{scores}");
    let lines = std::fs::read_to_string(&records).unwrap();
    let records: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["quotes_not_verbatim"], 0, "{r}");
        assert_eq!(r["abstained"], r["gold"].as_array().unwrap().is_empty(), "{r}");
    }
    assert_clean_failure(
        &run(bin().args(["eval", "--format", "squad", "--articles", "Nowhere"]).arg(&file)),
        "Nowhere",
    );
}
