//! The module graph (docs/ARCHITECTURE.md, "The module graph"): read from
//! the source, the imports between top-level modules outside test modules
//! follow one order from the leaves up (so they form no cycle), the leaves
//! import nothing of cutover's, and only app, cli and demo import config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that must not import any other module of the crate.
const LEAVES: [&str; 10] = [
    "budget",
    "clock",
    "exchange",
    "headers",
    "histogram",
    "mode",
    "secret",
    "seal",
    "trace",
    "units",
];

/// Every top-level module, from the leaves up: a module may import only
/// the modules before it. The same order as lib.rs `# Layout`.
#[rustfmt::skip]
const ORDER: [&str; 32] = [
    // leaves
    "clock", "units", "histogram", "secret", "headers", "trace", "budget", "mode", "exchange", "seal",
    // vocabulary built on the leaves, then the pure stages
    "ledger", "compare", "idmap", "redact", "capture", "route",
    // the outside parts
    "metrics", "server", "upstream", "store",
    // the stages of a request
    "record", "mirror", "drift", "recheck", "proxy", "report", "notify",
    // the admin listener, then assembly and the top
    "admin", "config", "app", "demo", "cli",
];

/// The source of a file without its test module and comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn files_of(path: &Path, into: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            files_of(&entry.unwrap().path(), into);
        }
    } else if path.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
        into.push(path.to_path_buf());
    }
}

/// Top-level module → the top-level modules it names as `crate::x`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .filter(|name| name != "lib" && name != "main")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        files_of(&src.join(module), &mut files);
        files_of(&src.join(format!("{module}.rs")), &mut files);
        let mut imports = BTreeSet::new();
        for file in files {
            let code = code_of(&file);
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if &name != module && modules.contains(&name) {
                    imports.insert(name);
                }
            }
        }
        graph.insert(module.clone(), imports);
    }
    graph
}

/// A cycle through `from`, if there is one, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    assert!(graph.len() > 20, "the scan found the modules: {graph:?}");
    assert!(graph["proxy"].contains("mirror"), "the scan sees imports: {graph:?}");
    if let Some(found) = cycle(&graph) {
        panic!("an import closes a cycle: {}", found.join(" -> "));
    }
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let graph = graph();
    let listed: BTreeSet<&str> = ORDER.iter().copied().collect();
    let found: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    assert_eq!(found, listed, "ORDER names each module of src/ once");
    assert_eq!(listed.len(), ORDER.len(), "ORDER names a module twice");
    for (level, module) in ORDER.iter().enumerate() {
        let below = &ORDER[..level];
        let above: Vec<&String> = graph[*module]
            .iter()
            .filter(|import| !below.contains(&import.as_str()))
            .collect();
        assert!(
            above.is_empty(),
            "{module} imports {above:?}, which ORDER puts above it"
        );
    }
}

#[test]
fn the_leaves_import_nothing_of_cutovers() {
    let graph = graph();
    for leaf in LEAVES {
        let imports = graph.get(leaf).unwrap_or_else(|| panic!("no module {leaf}"));
        assert!(imports.is_empty(), "{leaf} is a leaf but imports {imports:?}");
    }
}

#[test]
fn nothing_below_app_imports_config() {
    let graph = graph();
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(_, imports)| imports.contains("config"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        importers
            .iter()
            .all(|module| ["app", "cli", "demo"].contains(&module.as_str())),
        "config is assembled at the top; these import it: {importers:?}"
    );
}

#[test]
fn the_scan_finds_a_cycle_where_there_is_one() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.insert("c".to_string(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
}
