//! A short, fixed-seed pass of every fuzz target (src/fuzz.rs) in `make test`: the seeds must be
//! accepted, every input libFuzzer ever found (fuzz/regressions/<target>/) must come back, and a
//! few hundred mutations of the seeds must neither panic nor break a target's properties.
//! `make fuzz` runs the same targets for minutes under libFuzzer.

use pocketrag::fuzz;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn failure(name: &str, what: &str, input: &[u8], why: &str) -> ! {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures").join(name);
    std::fs::create_dir_all(&dir).expect("a folder for failing inputs");
    let path = dir.join(format!("{what}.bin"));
    std::fs::write(&path, input).expect("the failing input is kept");
    panic!("fuzz target {name}: {what} failed ({why}); input in {}", path.display());
}

fn run(name: &str, what: &str, input: &[u8]) -> bool {
    let target = fuzz::target(name).expect("a known target");
    match catch_unwind(AssertUnwindSafe(|| target(input))) {
        Ok(accepted) => accepted,
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            failure(name, what, input, &why)
        }
    }
}

fn pass(name: &str, mutations: usize) {
    let seeds = fuzz::seeds(name);
    assert!(!seeds.is_empty(), "{name} has seeds");
    for (i, seed) in seeds.iter().enumerate() {
        if !run(name, &format!("seed-{i}"), seed) {
            failure(name, &format!("seed-{i}"), seed, "a seed was refused");
        }
    }
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(name);
    if let Ok(entries) = std::fs::read_dir(&regressions) {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let input = std::fs::read(&p).expect("a regression input reads");
            run(name, &format!("regression-{}", p.file_name().unwrap().to_string_lossy()), &input);
        }
    }
    let mut rng = fuzz::rng_for(name, 1);
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0) * 2 + 64;
    let mut accepted = 0;
    for i in 0..mutations {
        let mut input = seeds[i % seeds.len()].clone();
        let other = &seeds[(i + 1) % seeds.len()];
        fuzz::mutate(&mut input, other, &mut rng, max_len);
        accepted += run(name, &format!("mutation-{i}"), &input) as usize;
    }
    eprintln!("{name}: {mutations} mutations, {accepted} accepted");
}

macro_rules! targets {
    ($($name:ident: $n:expr,)*) => { $( #[test] fn $name() { pass(stringify!($name), $n); } )* };
}

targets! {
    gguf: 300,
    adapter: 400,
    index: 1500,
    pdf: 400,
    html: 1500,
    markdown: 1500,
    text: 1500,
    tokenizer: 1500,
    prompt: 1000,
}

/// Found by `make fuzz` (gguf), each refused now for its reason:
/// - a tensor whose dimensions multiply past usize: the release build wrapped the product and
///   checked the file's length against the wrapped size;
/// - a Q5_1 matrix whose rows are one block, where candle's products read two blocks at a time
///   (its debug assertion caught it; the release build ran on).
#[test]
fn crafted_ggufs_found_by_the_fuzzer_are_refused() {
    for (file, reason) in [
        ("shape-product-overflow", "is larger than any file can hold"),
        ("q5_1-rows-of-one-block", "that type's products need a multiple of 64"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/gguf").join(file);
        let bytes = std::fs::read(path).expect("the regression input");
        match pocketrag::llm::Generator::from_gguf_bytes(&bytes, "crafted.gguf") {
            Err(e) => assert!(e.to_string().contains(reason), "{file}: {e}"),
            Ok(_) => panic!("{file}: a crafted GGUF loaded"),
        }
    }
}
