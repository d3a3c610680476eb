//! The shape of the crate: its top-level modules import each other in one direction only, so
//! each can be read (and tested) standing on the ones below it. `docs/DESIGN.md` shows the graph
//! this test prints (`cargo test --test house -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The crate's top-level modules named in `code` as `crate::name` or inside `use crate::{…}`.
/// Comment lines are skipped: a module named in prose is not imported.
fn modules_named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Only the group's top level: `{a::{b, c}, d}` names a and d.
                let (mut depth, mut start) = (0, 0);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            out.extend(first_segment(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.extend(first_segment(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                out.extend(first_segment(rest));
            }
        }
    }
    out
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Top-level module → the other top-level modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "bin" {
            continue;
        }
        let code = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(top.clone()).or_default();
        used.extend(modules_named(&code).into_iter().filter(|m| *m != top));
    }
    // The root re-exports `error`'s two types (`crate::Error`, `crate::Result`).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for used in graph.values_mut() {
        let root_types = used.remove("Error") | used.remove("Result");
        used.retain(|m| modules.contains(m));
        if root_types {
            used.insert("error".to_string());
        }
    }
    graph
}

/// A circle through `from`, if there is one: the modules along it, `from` first and last.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        goal: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            path.push(next.clone());
            if next == goal || (seen.insert(next.clone()) && walk(graph, next, goal, path, seen)) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_import_each_other_in_one_direction() {
    let graph = graph();
    for (module, used) in &graph {
        let used: Vec<&str> = used.iter().map(String::as_str).collect();
        println!("{module:8} → {}", if used.is_empty() { "(none)".to_string() } else { used.join(", ") });
    }
    let circles: Vec<String> = graph.keys().filter_map(|m| circle(&graph, m)).map(|c| c.join(" → ")).collect();
    assert!(circles.is_empty(), "import circles among src/ modules:\n{}", circles.join("\n"));
}

#[test]
fn the_reader_sees_groups_and_skips_prose() {
    let code =
        "use crate::{error::{Error, Result}, llm};\n// crate::rag in a comment\nlet x = crate::kernels::dot(a, b);";
    let named: Vec<String> = modules_named(code).into_iter().collect();
    assert_eq!(named, ["error", "kernels", "llm"]);
}
