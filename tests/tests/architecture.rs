//! The source tree keeps the shape docs/architecture.md describes:
//!
//! - no import cycle between modules: within each crate, sibling modules' `use` paths form an
//!   acyclic graph (a parent and its children may refer to each other: that is ownership,
//!   not a cycle);
//! - no non-test source file grows past 600 lines without saying why at its top.
//!
//! The crate-level arrows (consensus and the pallets free of I/O crates) are checked by
//! `scripts/check-boundaries.sh` with `cargo tree`.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose source is checked (the tests crate is test code throughout).
const CRATES: &[&str] = &[
    "consensus",
    "agent",
    "rpc",
    "node",
    "runtime",
    "pallets/support",
    "pallets/membership",
    "pallets/service-status",
    "pallets/network-config",
    "pallets/checkpoints",
    "pallets/failover",
];

/// Lines a non-test source file may have before it must say why it is longer.
const MAX_LINES: usize = 600;
/// What a longer file says near its top.
const LONG_FILE_NOTE: &str = "longer than 600 lines because";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `lib.rs` is the root, `a/mod.rs` and `a.rs` are
/// `a`, `a/b.rs` is `a::b`. Binaries' roots (`main.rs`, `bin/*.rs`) are left out.
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    Some(parts)
}

/// The code of a file without comments (doc comments name modules in prose).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal (a URL) cuts the line short: harmless here.
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b`, `super::a`, `self::a` and `child::a` path in `code`, as segments;
/// use groups (`crate::{a, b::{c}}`) count as one path per item.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_ident(chars[i - 1]);
        if starts_word && (chars[i].is_alphabetic() || chars[i] == '_') {
            let (found, end) = read_path(&chars, i);
            for segments in found {
                let head = segments[0].as_str();
                if segments.len() > 1
                    && (matches!(head, "crate" | "super" | "self") || children.contains(head))
                {
                    out.push(segments);
                }
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads the path starting at `start` (`a::b`, `a::{b, c::d}`); returns every full path it
/// names and where it ends.
fn read_path(chars: &[char], start: usize) -> (Vec<Vec<String>>, usize) {
    let mut segments = vec![];
    let mut j = start;
    loop {
        let begin = j;
        while j < chars.len() && is_ident(chars[j]) {
            j += 1;
        }
        segments.push(chars[begin..j].iter().collect::<String>());
        if !(j + 1 < chars.len() && chars[j] == ':' && chars[j + 1] == ':') {
            return (vec![segments], j);
        }
        j += 2;
        if j < chars.len() && chars[j] == '{' {
            // A use group: each item is a path under what was read so far.
            let mut found = vec![];
            j += 1;
            while j < chars.len() && chars[j] != '}' {
                if chars[j].is_alphabetic() || chars[j] == '_' {
                    let (items, end) = read_path(chars, j);
                    for item in items {
                        let mut full = segments.clone();
                        full.extend(item);
                        found.push(full);
                    }
                    j = end;
                } else {
                    j += 1;
                }
            }
            return (found, j + 1);
        }
        if !(j < chars.len() && (chars[j].is_alphabetic() || chars[j] == '_')) {
            return (vec![segments], j);
        }
    }
}

/// The module a path in module `from` refers to: the longest prefix that is a module.
fn resolve(
    from: &[String],
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = from.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    let mut target = base;
    for segment in rest {
        let mut next = target.clone();
        next.push(segment.clone());
        if modules.contains(&next) {
            target = next;
        } else {
            break;
        }
    }
    Some(target)
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            if let Some(cycle) = visit(node, edges, &mut state, &mut vec![]) {
                return Some(cycle);
            }
        }
    }
    None
}

/// The sibling-level import edges of one crate.
fn sibling_edges(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = vec![];
    rust_files(src, &mut files);
    // Test code may use any sibling's test doubles: only what ships counts.
    let sources: Vec<(Vec<String>, String)> = files
        .iter()
        .filter_map(|f| {
            let module = module_path(src, f)?;
            if module.iter().any(|m| m == "tests") {
                return None;
            }
            let text = std::fs::read_to_string(f).expect("source file reads");
            let shipped: Vec<&str> = text.lines().take(non_test_lines(&text)).collect();
            Some((module, code(&shipped.join("\n"))))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, text) in &sources {
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == from.len() + 1 && m.starts_with(from))
            .filter_map(|m| m.last().cloned())
            .collect();
        for path in paths(text, &children) {
            let Some(target) = resolve(from, &path, &modules) else {
                continue;
            };
            let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // A module and its ancestors may name each other.
            if common == from.len() || common == target.len() {
                continue;
            }
            edges
                .entry(from[..=common].to_vec())
                .or_default()
                .insert(target[..=common].to_vec());
        }
    }
    edges
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let root = workspace();
    let mut cycles = vec![];
    let mut scanned = 0;
    for krate in CRATES {
        let edges = sibling_edges(&root.join(krate).join("src"));
        scanned += edges.len();
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            cycles.push(format!("{krate}: {}", names.join(" -> ")));
        }
    }
    // Single-module crates have no sibling edges, but the workspace has many.
    assert!(
        scanned > 20,
        "only {scanned} modules import siblings: is the scan broken?"
    );
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle_between_siblings() {
    // The check itself must be able to fail.
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::{b::B, c};\npub struct A;\n").expect("write");
    std::fs::write(
        src.join("b.rs"),
        "use super::a::A; // a comment: crate::c\n",
    )
    .expect("write");
    let edges = sibling_edges(src);
    assert!(find_cycle(&edges).is_some(), "{edges:?}");
    std::fs::write(src.join("b.rs"), "pub struct B;\n").expect("write");
    assert!(find_cycle(&sibling_edges(src)).is_none());
}

/// Lines before an inline `#[cfg(test)] mod tests {` block, which is test code.
fn non_test_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests {"))
        .unwrap_or(lines.len())
}

#[test]
fn long_source_files_say_why() {
    let root = workspace();
    let mut long = vec![];
    for krate in CRATES {
        let mut files = vec![];
        rust_files(&root.join(krate).join("src"), &mut files);
        for file in files {
            if file.file_name().is_some_and(|n| n == "tests.rs")
                || file.components().any(|c| c.as_os_str() == "tests")
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source file reads");
            let lines = non_test_lines(&text);
            let explained = text
                .lines()
                .take(40)
                .any(|l| l.to_lowercase().contains(LONG_FILE_NOTE));
            if lines > MAX_LINES && !explained {
                long.push(format!(
                    "{} ({lines} lines)",
                    file.strip_prefix(&root).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines without a comment \"{LONG_FILE_NOTE} ...\" at the top: {long:?}"
    );
}
