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
    names_after(code, "crate::")
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

/// The full paths a `use` tree stands for: `a::{B, c::D as E}` is `a::B` and `a::c::D as E`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let Some(close) = tree.rfind('}').filter(|close| *close > open) else {
        return Vec::new();
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..close]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(|item| expand(&format!("{prefix}{}", item.trim())))
        .collect()
}

/// What a folder's `mod.rs` re-exports (or imports) from its files and subfolders:
/// name → sibling (`pub use file::X`, `pub use self::file::{X, y::Z as W}`,
/// `pub use {a::X, b::Y}`), so that a sibling naming `super::X` is seen to name `file`.
fn reexports(mod_rs: &str, siblings: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in mod_rs.split(';') {
        // A `use` item: `use`, `pub use` or `pub(…) use` at the start of a line.
        let Some(tree) = statement.lines().rev().find_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub(super) "))
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            line.strip_prefix("use ")
        }) else {
            continue;
        };
        // The tree runs from that line to the statement's end.
        let tree = &statement[statement.rfind(tree).unwrap_or(0)..];
        for path in expand(tree) {
            let path = path.trim().trim_start_matches("self::");
            let (path, alias) = match path.split_once(" as ") {
                Some((path, alias)) => (path.trim(), Some(alias.trim())),
                None => (path, None),
            };
            let segments: Vec<&str> = path.split("::").map(str::trim).collect();
            let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
                continue;
            };
            if segments.len() < 2 || !siblings.contains(*first) || *last == "*" {
                continue;
            }
            names.insert(alias.unwrap_or(last).to_owned(), (*first).to_owned());
        }
    }
    names
}

/// Every folder under `src`, with its path from `src` (`outbound/aws`).
fn module_folders(src: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![src.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)
            .expect("a source folder")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                let relative = path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push((path.clone(), relative));
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What a subfolder module `folder` names of its parent's parts: through `super::` in its
/// `mod.rs`, `super::super::` in its files, and `through_crate` anywhere under it.
fn names_of_folder(folder: &Path, through_crate: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a module folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&path).expect("a source file"));
            used.extend(names_after(&code, through_crate));
            if dir == folder {
                let up = if path.file_stem().is_some_and(|n| n == "mod") {
                    "super::"
                } else {
                    "super::super::"
                };
                used.extend(names_after(&code, up));
            }
        }
    }
    used
}

/// Circles among the parts of one module folder, at every depth: its files (not
/// `mod.rs`, which declares them) and its subfolders. A part names a sibling through
/// `super::NAME` or `crate::MODULE::NAME`, or through a name the folder's `mod.rs`
/// re-exports from it. Each as `src/MODULE/a.rs → b, src/MODULE/b.rs → a` (a subfolder
/// as `src/MODULE/c/`).
fn sibling_circles(src: &Path) -> Vec<String> {
    module_folders(src)
        .into_iter()
        .filter_map(|(folder, module)| {
            let through_crate = format!("crate::{}::", module.replace('/', "::"));
            folder_circle(&folder, &format!("src/{module}"), &through_crate, "mod")
        })
        .collect()
}

/// A circle among the parts of the folder `folder` (shown as `shown`), whose parts name
/// each other through `super::NAME`, `through_crate` + `NAME`, or a name its `root` file
/// (`mod`, or `lib` for a crate's `src/`) re-exports from one of them.
fn folder_circle(folder: &Path, shown: &str, through_crate: &str, root: &str) -> Option<String> {
    // The parts, by name: what each names of the others, and whether it is a folder.
    let mut parts: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for entry in std::fs::read_dir(folder)
        .expect("a module folder")
        .flatten()
    {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_dir() && path.join("mod.rs").is_file() {
            parts.insert(name, (names_of_folder(&path, through_crate), true));
        } else if path.extension().is_some_and(|e| e == "rs") && name != root {
            let code = code_of(&std::fs::read_to_string(&path).expect("a source file"));
            let used = names_after(&code, "super::")
                .into_iter()
                .chain(names_after(&code, through_crate))
                .collect();
            parts.insert(name, (used, false));
        }
    }
    let root_rs = std::fs::read_to_string(folder.join(format!("{root}.rs")))
        .map(|text| code_of(&text))
        .unwrap_or_default();
    let names: BTreeSet<String> = parts.keys().cloned().collect();
    let reexported = reexports(&root_rs, &names);
    let mut named: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, (used, _)) in &parts {
        for sibling in parts.keys().filter(|s| *s != name) {
            let through_reexport = used
                .iter()
                .any(|used| reexported.get(used).is_some_and(|part| part == sibling));
            if used.contains(sibling) || through_reexport {
                named.entry(name).or_default().push(sibling);
            }
        }
    }
    let circle = find_circle(&named)?;
    let part = |part: &str| match parts.get(part) {
        Some((_, true)) => format!("{shown}/{part}/"),
        _ => format!("{shown}/{part}.rs"),
    };
    let steps: Vec<String> = circle
        .windows(2)
        .map(|pair| format!("{} → {}", part(pair[0]), pair[1]))
        .collect();
    let module = shown.strip_prefix("src/").unwrap_or(shown);
    Some(format!(
        "an import circle inside {module}: {}",
        steps.join(", ")
    ))
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
    // The engine's and outbound HTTP's crates: no circle among a crate's files (its
    // root's re-exports included) nor inside its folders.
    for name in ["sfn-wasm-engine", "sfn-wasm-outbound"] {
        let crate_src = host.join("../crates").join(name).join("src");
        let shown = format!("{name}/src");
        problems.extend(folder_circle(&crate_src, &shown, "crate::", "lib"));
        problems.extend(sibling_circles(&crate_src));
    }
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

#[test]
fn the_check_sees_a_circle_among_a_crates_root_files() {
    // A crate like the engine: `task.rs` names `Handler` through `lib.rs`'s re-export,
    // `handler.rs` names `task` through `crate::`.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod handler;\nmod task;\npub use handler::Handler;\n",
    )
    .unwrap();
    std::fs::write(src.join("handler.rs"), "use crate::task::run;\n").unwrap();
    std::fs::write(src.join("task.rs"), "use crate::Handler;\n").unwrap();
    assert_eq!(
        folder_circle(&src, "engine/src", "crate::", "lib").as_deref(),
        Some(
            "an import circle inside engine/src: engine/src/handler.rs → task, engine/src/task.rs → handler"
        )
    );
    std::fs::write(src.join("task.rs"), "use crate::budget::LineBudget;\n").unwrap();
    assert_eq!(folder_circle(&src, "engine/src", "crate::", "lib"), None);
}

#[test]
fn the_check_reads_every_form_of_reexport_and_sees_folder_modules() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("net/aws")).unwrap();
    // `self::` paths, groups and renames, and a folder module among the files.
    std::fs::write(
        src.join("net/mod.rs"),
        "mod aws;\nmod send;\nmod tls;\npub use self::send::{Target as Goal, x::Inner};\npub use {tls::Roots, aws::Signer};\n",
    )
    .unwrap();
    std::fs::write(src.join("net/aws/mod.rs"), "mod sign;\nuse super::Goal;\n").unwrap();
    std::fs::write(src.join("net/aws/sign.rs"), "use super::super::Roots;\n").unwrap();
    std::fs::write(src.join("net/send.rs"), "use super::Signer;\n").unwrap();
    std::fs::write(src.join("net/tls.rs"), "pub struct Roots;\n").unwrap();
    assert_eq!(
        sibling_circles(&src),
        ["an import circle inside net: src/net/aws/ → send, src/net/send.rs → aws"]
    );
    // One way only is no circle.
    std::fs::write(src.join("net/send.rs"), "use super::Roots;\n").unwrap();
    assert!(
        sibling_circles(&src).is_empty(),
        "{:?}",
        sibling_circles(&src)
    );
}
