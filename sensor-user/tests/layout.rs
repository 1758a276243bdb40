//! The library's folders are the stages of the data flow, in order, after
//! the file layer every stage shares (`lib.rs` lists them so); a module may
//! use the ones before it, never one after it. This test reads the sources and names every import that points
//! downstream, so the layout cannot drift back into loops.

use std::path::{Path, PathBuf};

/// The stages as `lib.rs` declares them, in data-flow order.
fn stages(src: &Path) -> Vec<String> {
    std::fs::read_to_string(src.join("lib.rs"))
        .expect("lib.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The stages a source file names as `crate::<stage>` outside its tests,
/// including the members of `use crate::{a::…, b::…}` groups.
fn used_stages(text: &str, stages: &[String]) -> Vec<String> {
    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut used = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::x, b::{y, z}}`: the first segment of each item.
            let end = group.find("};").unwrap_or(group.len());
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => item_start = true,
                    c if item_start && c.is_alphabetic() => {
                        item_start = false;
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        used.push(name);
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.push(name);
        }
    }
    used.retain(|u| stages.contains(u));
    used
}

#[test]
fn no_stage_imports_a_stage_downstream_of_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let stages = stages(&src);
    assert_eq!(
        stages,
        [
            "files", "capture", "features", "model", "alerts", "sinks", "ops", "run"
        ],
        "lib.rs lists the shared file layer, then the stages in data-flow order"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let Some(stage) = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
        else {
            continue;
        };
        let Some(level) = stages.iter().position(|s| *s == stage) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source");
        for used in used_stages(&text, &stages) {
            let used_level = stages.iter().position(|s| *s == used).expect("a stage");
            if used_level > level {
                upward.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "downstream imports: {upward:#?}");
}

#[test]
fn the_import_scanner_sees_groups_and_paths() {
    let stages: Vec<String> = ["capture", "model", "run"].map(String::from).into();
    let text = "use crate::{\n    capture::x,\n    model::{a, b},\n};\nfn f() { crate::run::go(); }\n#[cfg(test)]\nmod tests { use crate::ops; }";
    assert_eq!(used_stages(text, &stages), ["capture", "model", "run"]);
}
