//! Writes each fuzz target's seeds into fuzz/corpus/<target>/ for libFuzzer (`make fuzz`).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, _) in pocketrag::fuzz::TARGETS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in pocketrag::fuzz::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
        println!("{name}: {} seeds in {}", pocketrag::fuzz::seeds(name).len(), dir.display());
    }
    Ok(())
}
