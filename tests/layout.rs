//! The source layout keeps its shape: the library's modules depend on each other without a
//! cycle, at the top level (data flows one way: corpus → tokenize → encoder → model → output →
//! pipeline → engine, with train, eval and reference beside) and inside each folder, so each
//! can be read and changed from the bottom up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each top-level module of `src/` names (see [`module_dependencies`]).
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, deps) in module_dependencies(src) {
        let module = top(&module);
        let deps: BTreeSet<String> = deps
            .iter()
            .map(|d| top(d))
            .filter(|d| *d != module)
            .collect();
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

/// The code lines of a file: comments and unit tests (`#[cfg(test)] mod tests { ... }`) left
/// out.
fn code_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "#[cfg(test)]" && lines.clone().next() == Some("mod tests {") {
            // rustfmt closes a top-level module with a `}` of its own at column 0.
            lines.find(|l| *l == "}");
            continue;
        }
        out.push(line.split("//").next().unwrap_or(""));
    }
    out
}

/// The paths a line names from `crate::` or `super::` on, as module path segments relative to
/// `module` (`["engine", "bucket", "Cost"]`); a `{ ... }` group gives one path per item.
fn named_paths(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let ident = |s: &str| -> usize {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let word_len = ident(&rest[at..]);
        let word = &rest[at..at + word_len];
        let preceded =
            rest[..at].ends_with("::") || rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric());
        if preceded
            || !(word == "crate" || word == "super")
            || !rest[at + word_len..].starts_with("::")
        {
            rest = &rest[at + word_len..];
            continue;
        }
        let mut base: Vec<String> = if word == "crate" {
            Vec::new()
        } else {
            module[..module.len().saturating_sub(1)].to_vec()
        };
        let mut tail = &rest[at + word_len + 2..];
        loop {
            if let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
                continue;
            }
            let n = ident(tail);
            if n > 0 && tail[n..].starts_with("::") {
                base.push(tail[..n].to_string());
                tail = &tail[n + 2..];
                continue;
            }
            break;
        }
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let mut path = base.clone();
                path.extend(
                    item.split("::")
                        .map(|p| p[..ident(p)].to_string())
                        .filter(|p| !p.is_empty()),
                );
                found.push(path);
            }
            tail = &group[end..];
        } else {
            let n = ident(tail);
            let mut path = base;
            if n > 0 {
                path.push(tail[..n].to_string());
            }
            found.push(path);
            tail = &tail[n..];
        }
        rest = tail;
    }
    found
}

/// Every module of `src/` (`pipeline::write`, from `pipeline/write.rs` or
/// `pipeline/write/mod.rs`; unit-test files left out) and the modules its code names, each path
/// resolved to the longest module it starts with. A module's ancestors are left out: a parent
/// declares its children, and they may use what it defines or re-exports.
fn module_dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut module: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|l| l == "mod") {
                    module.pop();
                }
                let stem = module.last().cloned().unwrap_or_default();
                if module.len() == 1 && (stem == "main" || stem == "lib") || stem == "tests" {
                    continue;
                }
                files.push((module, p));
            }
        }
    }
    let names: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &files {
        let deps = graph.entry(module.join("::")).or_default();
        let text = std::fs::read_to_string(file).unwrap();
        for line in code_lines(&text) {
            for path in named_paths(line, module) {
                let Some(target) = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].to_vec())
                    .find(|p| names.contains(p))
                else {
                    continue;
                };
                if !module.starts_with(&target) {
                    deps.insert(target.join("::"));
                }
            }
        }
    }
    graph
}

/// A cycle of `graph` as the list of its modules, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "{graph:?}");
    assert!(
        graph["engine"].contains("pipeline") && graph["pipeline"].contains("model"),
        "the scan finds imports: {graph:?}"
    );
    if let Some(found) = cycle(&graph) {
        panic!("import cycle: {}", found.join(" -> "));
    }
    // The test kit is only compiled for tests: no module of the library may need it.
    let users: Vec<&String> = graph
        .iter()
        .filter(|(_, deps)| deps.contains("testing"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "the library uses the test kit: {users:?}");
    assert!(
        graph["testing"].contains("engine"),
        "unit tests are left out, the kit is not: {graph:?}"
    );
}

#[test]
fn modules_import_each_other_without_a_cycle_inside_folders_too() {
    let graph = module_dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The scan sees sibling imports, grouped ones and `super::` paths alike.
    assert!(
        graph["pipeline::prepare"].contains("pipeline::bucket"),
        "{graph:?}"
    );
    assert!(
        graph["corpus::parquet"].contains("corpus::text"),
        "{graph:?}"
    );
    assert!(
        graph["pipeline::write"].contains("pipeline::sink"),
        "{graph:?}"
    );
    if let Some(found) = cycle(&graph) {
        panic!("import cycle: {}", found.join(" -> "));
    }
}

#[test]
fn named_paths_resolve_super_and_groups() {
    let module: Vec<String> = ["engine", "pipeline", "write"].map(String::from).to_vec();
    let found = named_paths(
        "use super::super::{manifest::Manifest, job}; let x = crate::schema::TABLES; f(super::Stage)",
        &module,
    );
    let expect: Vec<Vec<String>> = [
        vec!["engine", "manifest", "Manifest"],
        vec!["engine", "job"],
        vec!["schema", "TABLES"],
        vec!["engine", "pipeline", "Stage"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(found, expect);
}

#[test]
fn the_cycle_check_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
}
