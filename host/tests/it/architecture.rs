//! The library's layers, checked: `ARCHITECTURE.md` lists which top-level modules of
//! `host/src` form which layer, lowest first, and this test reads every `crate::` path
//! in the library's code and fails, naming both files, when a module reaches into a
//! higher layer or the modules of one layer import each other in a circle, or the files
//! of one module folder name each other in a circle. (ArchUnit's
//! idea, for Java; here a few dozen lines over the source text.)
//!
//! The table lives in the document, not here, so the picture a reader sees is the one
//! that is enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn host_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module → layer, from the fenced block under `## Layers` in `ARCHITECTURE.md`: one
/// line per layer, `N  NAME  module, module, ...`.
fn layers(document: &str) -> BTreeMap<String, (u32, String)> {
    let section = document
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the Layers section has a fenced block");
    let mut table = BTreeMap::new();
    for line in block.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(number), Some(name)) = (words.next(), words.next()) else {
            panic!("a layer line is `N NAME module, ...`: {line:?}");
        };
        let number: u32 = number
            .parse()
            .unwrap_or_else(|_| panic!("a layer line starts with its number: {line:?}"));
        for module in words.flat_map(|w| w.split(',')).filter(|m| !m.is_empty()) {
            let previous = table.insert(module.to_owned(), (number, name.to_owned()));
            assert!(previous.is_none(), "{module} is in two layers");
        }
    }
    table
}

/// Code without comments: `//` to the end of the line (doc links do not make a module
/// depend on another).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`, including inside
/// `use crate::{a, b::c}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those after `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Every library source file (the binary's `main.rs` and `cli/` are outside the
/// library) with the top-level module it belongs to.
fn library_files(src: &Path) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(src).ok()?.to_owned();
            let first = relative
                .components()
                .next()?
                .as_os_str()
                .to_str()?
                .to_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            (!matches!(module.as_str(), "lib" | "main" | "cli")).then_some((path, module))
        })
        .collect()
}

/// The import edges between top-level modules, each with the file that makes it.
type Edges = BTreeMap<(String, String), PathBuf>;

fn edges(src: &Path) -> Edges {
    let mut edges = Edges::new();
    for (file, module) in library_files(src) {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for imported in imports(&code_of(&text)) {
            if imported != module {
                edges
                    .entry((module.clone(), imported))
                    .or_insert(file.clone());
            }
        }
    }
    edges
}

/// The problems with `edges` under `layers`: unknown modules, upward imports, circles.
fn violations(edges: &Edges, layers: &BTreeMap<String, (u32, String)>, src: &Path) -> Vec<String> {
    let show = |file: &Path| {
        file.strip_prefix(src.parent().unwrap_or(src))
            .unwrap_or(file)
            .display()
            .to_string()
    };
    let file_of = |module: &str| {
        let folder = src.join(module);
        if folder.is_dir() {
            format!("src/{module}/")
        } else {
            format!("src/{module}.rs")
        }
    };
    let mut problems = Vec::new();
    let mut modules: BTreeSet<&String> = BTreeSet::new();
    for (from, to) in edges.keys() {
        modules.insert(from);
        modules.insert(to);
    }
    for module in modules {
        if !layers.contains_key(module) {
            problems.push(format!(
                "{} is in no layer: add `{module}` to the Layers table of ARCHITECTURE.md",
                file_of(module)
            ));
        }
    }
    for ((from, to), file) in edges {
        if let (Some((low, low_name)), Some((high, high_name))) = (layers.get(from), layers.get(to))
            && high > low
        {
            problems.push(format!(
                "{} (layer {low}, {low_name}) imports crate::{to} from {} (layer {high}, {high_name}): a module may only import from its own layer or below",
                show(file),
                file_of(to)
            ));
        }
    }
    // Circles among modules (within one layer: upward edges are reported above).
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    if let Some(circle) = find_circle(&graph) {
        let steps: Vec<String> = circle
            .windows(2)
            .map(|pair| {
                let file = &edges[&(pair[0].to_owned(), pair[1].to_owned())];
                format!("{} → crate::{}", show(file), pair[1])
            })
            .collect();
        problems.push(format!("an import circle: {}", steps.join(", ")));
    }
    problems
}

/// The names right after `prefix` in `code`, including inside `prefix{a, b::c}` groups
/// (top-level names of the group only).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
            continue;
        };
        let (mut depth, mut start) = (0, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
    }
    found
}

/// What a folder's `mod.rs` re-exports from its files: name → file (`pub use file::X`,
/// `pub use file::{X, Y}`), so that a sibling naming `super::X` is seen to name `file`.
fn reexports(mod_rs: &str, files: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in mod_rs.split(';') {
        let Some(at) = statement.find("use ") else {
            continue;
        };
        let path = statement[at + "use ".len()..].trim();
        let Some((file, rest)) = path.split_once("::") else {
            continue;
        };
        if !files.contains(file) {
            continue;
        }
        for name in names_after(&format!("::{rest}"), "::") {
            names.insert(name, file.to_owned());
        }
    }
    names
}

/// Circles among the files of one module folder: a file naming a sibling file through
/// `super::NAME` or `crate::MODULE::NAME`, or through a name the folder's `mod.rs`
/// re-exports from it (`mod.rs`, which declares them, is not a sibling). Each as
/// `src/MODULE/a.rs → b, src/MODULE/b.rs → a`.
fn sibling_circles(src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut folders: Vec<PathBuf> = std::fs::read_dir(src)
        .expect("a source folder")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    for folder in folders {
        let module = folder
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for entry in std::fs::read_dir(&folder)
            .expect("a module folder")
            .flatten()
        {
            let path = entry.path();
            if let Some(name) = path.file_stem().and_then(|n| n.to_str())
                && path.extension().is_some_and(|e| e == "rs")
                && name != "mod"
            {
                let text = std::fs::read_to_string(&path).expect("a source file");
                files.insert(name.to_owned(), code_of(&text));
            }
        }
        let mod_rs = std::fs::read_to_string(folder.join("mod.rs"))
            .map(|text| code_of(&text))
            .unwrap_or_default();
        let stems: BTreeSet<String> = files.keys().cloned().collect();
        let reexported = reexports(&mod_rs, &stems);
        let mut named: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, code) in &files {
            let used: BTreeSet<String> = names_after(code, "super::")
                .into_iter()
                .chain(names_after(code, &format!("crate::{module}::")))
                .collect();
            for sibling in files.keys().filter(|s| *s != name) {
                let through_reexport = used
                    .iter()
                    .any(|used| reexported.get(used).is_some_and(|file| file == sibling));
                if used.contains(sibling) || through_reexport {
                    named.entry(name).or_default().push(sibling);
                }
            }
        }
        if let Some(circle) = find_circle(&named) {
            let steps: Vec<String> = circle
                .windows(2)
                .map(|pair| format!("src/{module}/{}.rs → {}", pair[0], pair[1]))
                .collect();
            problems.push(format!(
                "an import circle inside {module}: {}",
                steps.join(", ")
            ));
        }
    }
    problems
}

/// A circle in `graph`, as its modules with the first repeated at the end.
fn find_circle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node);
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(circle);
        }
    }
    None
}

#[test]
fn the_library_imports_only_downwards_and_without_circles() {
    let host = host_dir();
    let document = std::fs::read_to_string(host.join("../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let layers = layers(&document);
    let src = host.join("src");
    let mut problems = violations(&edges(&src), &layers, &src);
    problems.extend(sibling_circles(&src));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // Every layer named is a real module, so the table cannot rot.
    for module in layers.keys() {
        assert!(
            src.join(format!("{module}.rs")).is_file() || src.join(module).is_dir(),
            "ARCHITECTURE.md's Layers table names `{module}`, which is not a module of host/src"
        );
    }
}

#[test]
fn the_check_catches_an_upward_import_and_a_circle() {
    // A planted tree: `low` imports `high` (upward), and `a` and `b` import each other.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("high")).unwrap();
    std::fs::write(
        src.join("low.rs"),
        "use crate::high::Thing; // crate::ignored\n",
    )
    .unwrap();
    std::fs::write(src.join("high/mod.rs"), "use crate::{low::X, a};\n").unwrap();
    std::fs::write(src.join("a.rs"), "pub fn f() { crate::b::g() }\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{\n    a::{f},\n};\n").unwrap();
    let layers = layers("# x\n\n## Layers\n\n```text\n1  top   high, a, b\n0  leaf  low\n```\n");
    let problems = violations(&edges(&src), &layers, &src);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with(
            "src/low.rs (layer 0, leaf) imports crate::high from src/high/ (layer 1, top)"
        ),
        "{}",
        problems[0]
    );
    assert_eq!(
        problems[1],
        "an import circle: src/a.rs → crate::b, src/b.rs → crate::a"
    );
}

#[test]
fn the_check_catches_a_circle_between_the_files_of_one_module() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("net")).unwrap();
    std::fs::write(
        src.join("net/mod.rs"),
        "mod aws;\nmod send;\nuse aws::Signer;\n",
    )
    .unwrap();
    std::fs::write(src.join("net/aws.rs"), "use super::send::Target;\n").unwrap();
    std::fs::write(
        src.join("net/send.rs"),
        "pub aws: Option<crate::net::aws::Label>,\n",
    )
    .unwrap();
    assert_eq!(
        sibling_circles(&src),
        ["an import circle inside net: src/net/aws.rs → send, src/net/send.rs → aws"]
    );
    // One way only is no circle.
    std::fs::write(
        src.join("net/send.rs"),
        "pub struct Target; // super::aws::Label\n",
    )
    .unwrap();
    assert!(sibling_circles(&src).is_empty());
}

#[test]
fn the_check_sees_a_circle_through_a_reexport() {
    // `task.rs` names `Handler` through `mod.rs`'s re-export of `handler.rs`, which names
    // `task.rs` directly: a circle the files' paths alone do not show.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("engine")).unwrap();
    std::fs::write(
        src.join("engine/mod.rs"),
        "mod handler;\nmod task;\npub use handler::{Digest, Handler};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("engine/handler.rs"),
        "use super::task::TaskState;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("engine/task.rs"),
        "use super::{Handler, WasmEngine};\n",
    )
    .unwrap();
    assert_eq!(
        sibling_circles(&src),
        [
            "an import circle inside engine: src/engine/handler.rs → task, src/engine/task.rs → handler"
        ]
    );
    std::fs::write(src.join("engine/task.rs"), "use super::WasmEngine;\n").unwrap();
    assert!(sibling_circles(&src).is_empty());
}
