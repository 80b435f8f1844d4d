//! `cargo xtask lint`'s check of netd-ebpf's layers: each module uses
//! only modules of its own layer or of the layers before it, and no two
//! modules reach each other (no import circle).
//!
//! A module is a file under `src/` (`stages/mesh.rs` is `stages::mesh`, a
//! layer's `mod.rs` is the layer itself); what it uses is every
//! `crate::…` and `super::…` path in it, `use` trees included.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context, Result};

/// The layers, in order: a module may use its own layer and those before.
pub const LAYERS: &[&[&str]] = &[
    &["types", "frame"],
    &["maps"],
    &["observe"],
    &["stages", "rewrite"],
    &["exits"],
    &["programs"],
];

/// Checks the crate whose sources are in `src`.
pub fn check(src: &Path) -> Result<()> {
    let mut modules = BTreeMap::new();
    read_dir(src, src, &mut modules)?;
    let problems = problems(&modules);
    if !problems.is_empty() {
        bail!(
            "netd-ebpf's layers are broken:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!(
        "layers: {} modules of netd-ebpf in {} layers, no circle",
        modules.len(),
        LAYERS.len()
    );
    Ok(())
}

fn read_dir(root: &Path, dir: &Path, modules: &mut BTreeMap<String, String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            read_dir(root, &path, modules)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root)?.with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            let text = fs::read_to_string(&path)?;
            modules.insert(if name == "main" { String::new() } else { name }, text);
        }
    }
    Ok(())
}

/// The layer of a module (`stages::mesh` is in `stages`'), if any.
fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Everything wrong with `modules` (module path → source).
pub fn problems(modules: &BTreeMap<String, String>) -> Vec<String> {
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut uses: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (module, text) in modules {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut used = BTreeSet::new();
        for path in paths(text) {
            let full = if let Some(rest) = path.strip_prefix("crate::") {
                rest.to_string()
            } else if let Some(rest) = path.strip_prefix("super::") {
                if parent.is_empty() {
                    rest.to_string()
                } else {
                    format!("{parent}::{rest}")
                }
            } else {
                continue;
            };
            // The longest module the path names.
            let mut target = None;
            let mut prefix = String::new();
            for seg in full.split("::") {
                if !prefix.is_empty() {
                    prefix.push_str("::");
                }
                prefix.push_str(seg);
                if names.contains(prefix.as_str()) {
                    target = Some(prefix.clone());
                }
            }
            if let Some(t) = target {
                if t != *module && !module.starts_with(&format!("{t}::")) {
                    used.insert(t);
                }
            }
        }
        if let Some(mine) = layer(module) {
            for t in &used {
                if layer(t).is_some_and(|theirs| theirs > mine) {
                    problems.push(format!(
                        "{module} uses {t}, of a later layer ({})",
                        LAYERS[layer(t).unwrap_or(0)].join(", ")
                    ));
                }
            }
        }
        uses.insert(module, used);
    }
    for circle in circles(&uses) {
        problems.push(format!("import circle among {}", circle.join(", ")));
    }
    problems
}

/// The `crate::` and `super::` paths in a source, `use` trees expanded.
fn paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        expand("", &after[..end], &mut out);
        rest = &after[end..];
    }
    // Paths written in place (`crate::observe::events::after_tc(skb)`).
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            out.push(word.trim_end_matches(':').to_string());
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d}}`) under `prefix`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree: String = tree.replace(" as ", "@").split_whitespace().collect();
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_string()
        } else {
            format!("{p}::{s}")
        }
    };
    match tree.find('{') {
        None => {
            let path = tree.split('@').next().unwrap_or(&tree);
            out.push(join(prefix, path.trim_end_matches("::*")));
        }
        Some(open) => {
            let head = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let base = join(prefix, head);
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand_item(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand_item(&base, &inner[start..], out);
        }
    }
}

fn expand_item(base: &str, item: &str, out: &mut Vec<String>) {
    match item {
        "" => {}
        "self" => out.push(base.to_string()),
        item => expand(base, item, out),
    }
}

/// The groups of modules that reach each other (the strongly connected
/// components of more than one module), each sorted.
fn circles(uses: &BTreeMap<&str, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    let nodes: Vec<&str> = uses.keys().copied().collect();
    let edges = |n: &str| -> Vec<&str> {
        uses.get(n)
            .into_iter()
            .flatten()
            .filter_map(|t| uses.get_key_value(t.as_str()).map(|(k, _)| *k))
            .collect()
    };
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for &start in &nodes {
        if !seen.insert(start) {
            continue;
        }
        let mut stack = vec![(start, edges(start), 0)];
        while let Some((node, next, i)) = stack.last_mut() {
            if let Some(&n) = next.get(*i) {
                *i += 1;
                if seen.insert(n) {
                    stack.push((n, edges(n), 0));
                }
            } else {
                order.push(*node);
                stack.pop();
            }
        }
    }
    let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &n in &nodes {
        for t in edges(n) {
            reverse.entry(t).or_default().push(n);
        }
    }
    let mut placed = BTreeSet::new();
    let mut groups = Vec::new();
    for &root in order.iter().rev() {
        if !placed.insert(root) {
            continue;
        }
        let mut group = vec![root.to_string()];
        let mut todo = vec![root];
        while let Some(n) = todo.pop() {
            for &m in reverse.get(n).into_iter().flatten() {
                if placed.insert(m) {
                    group.push(m.to_string());
                    todo.push(m);
                }
            }
        }
        if group.len() > 1 {
            group.sort();
            groups.push(group);
        }
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn a_layered_crate_passes() {
        let c = crate_of(&[
            ("types", "pub mod a;"),
            ("types::a", "use netd_common::x as y;"),
            ("stages", ""),
            ("stages::one", "use crate::{maps::X, types::{a::A, self}};"),
            (
                "stages::two",
                "use super::one; fn f() { crate::types::a::g() }",
            ),
            ("maps", "use crate::types::a::A;"),
        ]);
        assert_eq!(problems(&c), Vec::<String>::new());
    }

    #[test]
    fn a_circle_and_a_use_of_a_later_layer_are_found() {
        let c = crate_of(&[
            ("stages", ""),
            ("stages::one", "use super::two::f;"),
            // A path in place, not in a use.
            ("stages::two", "fn g() { crate::stages::one::h(); }"),
            ("maps", "use crate::{\n    exits::tc, // a comment\n};"),
            ("exits", ""),
            ("exits::tc", ""),
        ]);
        assert_eq!(
            problems(&c),
            vec![
                "maps uses exits::tc, of a later layer (exits)".to_string(),
                "import circle among stages::one, stages::two".to_string(),
            ]
        );
    }
}
