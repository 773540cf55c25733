//! The layer rules of ARCHITECTURE.md ("Layers"), kept by reading the source: every `crate::`
//! path in `src/` (in `use` trees and inline, comments and string literals aside) may only
//! reach a module of a lower layer; providers never reach one another; only `store` names
//! `sled`; only the simulator tools (`demo`, `bench`, `cli/sim_cmd.rs`) name `pollhook_sim`.
//! The table below must also be the one ARCHITECTURE.md shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top: a module may use modules of lower layers only (not its own layer's).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &[
            "time", "redact", "files", "shutdown", "shard", "notify", "memory", "backoff", "locks",
        ],
    ),
    ("values", &["event", "pacing", "adaptive"]),
    ("config", &["config"]),
    ("adapters", &["store", "http", "logging"]),
    ("metrics", &["metrics"]),
    ("domain", &["providers", "sinks"]),
    ("engine", &["engine"]),
    ("service", &["admin"]),
    ("daemon", &["scheduler"]),
    ("tools", &["demo", "bench"]),
    ("cli", &["cli"]),
];

/// Modules of `providers` that every provider shares; any other is one provider's own.
const SHARED_PROVIDER_MODULES: &[&str] = &["wire", "census", "contract", "probe"];

/// Source files (under src/) allowed to name the simulator crate.
const SIM_USERS: &[&str] = &["demo.rs", "bench/", "cli/sim_cmd.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under src/: `providers/caminvoice/mod.rs` -> [providers,
/// caminvoice]; lib.rs and main.rs -> [].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a Rust file with comments removed and string and char literals emptied.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            'r' if (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
                && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_')) =>
            {
                // r"..." or r#"..."#
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('a', '\n', '\u{..}'), or a lifetime ('a) kept as is.
                if c.get(i + 1) == Some(&'\\') {
                    let mut j = i + 2;
                    while j < c.len() && c[j] != '\'' {
                        j += 1;
                    }
                    out.push_str("' '");
                    i = j + 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    out.push_str("' '");
                    i += 3;
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, ch) in tree.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&tree[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        if let Some(open) = item.find('{') {
            let head = item[..open].trim_end_matches("::");
            let mut p = prefix.clone();
            p.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
            expand(&item[open + 1..item.len() - 1], p, out);
        } else {
            let mut p = prefix.clone();
            let item = item.split('@').next().unwrap();
            p.extend(item.split("::").map(|s| s.trim().to_string()));
            out.push(p);
        }
    }
}

/// Every path to another module of the crate that `code` names: `crate::` paths, and `super::`
/// paths resolved against the file's module `me`.
fn crate_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    // `use` trees.
    let mut rest = flat.as_str();
    while let Some(at) = rest.find("use ") {
        let before_ok = at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        if before_ok {
            let tree = after[..end].replace(" as ", "@").replace(' ', "");
            let mut paths = Vec::new();
            expand(&tree, Vec::new(), &mut paths);
            out.extend(paths);
        }
        rest = &after[end..];
    }
    // Inline paths.
    let bytes = flat.as_bytes();
    for (at, _) in flat.match_indices("crate::") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let path: Vec<String> = flat[at..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap()
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        out.push(path);
    }
    out.into_iter()
        .filter_map(|p| match p.first().map(String::as_str) {
            Some("crate") => Some(p[1..].to_vec()),
            Some("super") => {
                let ups = p.iter().take_while(|s| *s == "super").count();
                let base = me.len().checked_sub(ups)?;
                let mut resolved = me[..base].to_vec();
                resolved.extend(p[ups..].iter().cloned());
                Some(resolved)
            }
            _ => None,
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

struct Source {
    rel: PathBuf,
    module: Vec<String>,
    code: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(src()).unwrap().to_path_buf();
            Source {
                module: module_of(&rel),
                code: code_only(&std::fs::read_to_string(&path).unwrap()),
                rel,
            }
        })
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: std::collections::BTreeSet<String> = sources()
        .iter()
        .filter_map(|s| s.module.first())
        .filter(|m| layer_of(m).is_none())
        .cloned()
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to LAYERS here and to ARCHITECTURE.md, \"Layers\"): {unplaced:?}"
    );
}

#[test]
fn imports_only_reach_lower_layers() {
    let mut broken = Vec::new();
    let mut edges = 0;
    for s in sources() {
        let Some(me) = s.module.first() else { continue };
        let Some(mine) = layer_of(me) else { continue };
        for path in crate_paths(&s.code, &s.module) {
            let target = &path[0];
            let Some(theirs) = layer_of(target) else {
                continue;
            };
            if target == me {
                // Inside one module; between two providers it is still forbidden.
                if me == "providers" && s.module.len() > 1 && path.len() > 1 {
                    let (from, to) = (&s.module[1], &path[1]);
                    let own = |m: &str| !SHARED_PROVIDER_MODULES.contains(&m) && path.len() > 2;
                    if from != to
                        && own(from)
                        && own(to)
                        && !SHARED_PROVIDER_MODULES.contains(&to.as_str())
                    {
                        broken.push(format!(
                            "{}: providers::{from} reaches into providers::{to} (`{}`): a provider uses only the shared providers modules",
                            s.rel.display(),
                            path.join("::")
                        ));
                    }
                }
                continue;
            }
            edges += 1;
            if theirs >= mine {
                broken.push(format!(
                    "{}: `{}` is in layer {} ({}), `{target}` in layer {} ({}): a module may use only lower layers",
                    s.rel.display(),
                    path.join("::"),
                    mine,
                    LAYERS[mine].0,
                    theirs,
                    LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(
        edges > 100,
        "the reader found only {edges} cross-module paths"
    );
    broken.sort();
    broken.dedup();
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn only_store_names_sled() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|s| s.module.first().map(String::as_str) != Some("store"))
        .filter(|s| names(&s.code, "sled") || names(&s.code, "IVec"))
        .map(|s| s.rel.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "only src/store may name sled (its types, errors or IVec): {offenders:?}"
    );
}

#[test]
fn only_the_simulator_tools_name_the_simulator() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|s| names(&s.code, "pollhook_sim"))
        .map(|s| s.rel.to_string_lossy().into_owned())
        .filter(|rel| !SIM_USERS.iter().any(|u| rel.starts_with(u)))
        .collect();
    assert!(
        offenders.is_empty(),
        "the daemon must not depend on the simulator (only {SIM_USERS:?}, behind the `sim` feature): {offenders:?}"
    );
}

/// Whether `ident` appears in `code` as a whole identifier.
fn names(code: &str, ident: &str) -> bool {
    code.match_indices(ident).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + ident.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

#[test]
fn architecture_md_shows_this_table() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    // The rows of the table under "## Layers": | n | layer | `a`, `b` | ...
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let mut rows: BTreeMap<usize, (String, Vec<String>)> = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Ok(n) = cells[1].parse::<usize>() else {
            continue;
        };
        let modules = cells[3]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty())
            .collect();
        rows.insert(n, (cells[2].to_string(), modules));
    }
    let want: BTreeMap<usize, (String, Vec<String>)> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, (name, ms))| {
            (
                i,
                (name.to_string(), ms.iter().map(|m| m.to_string()).collect()),
            )
        })
        .collect();
    assert_eq!(
        rows, want,
        "ARCHITECTURE.md \"Layers\" differs from tests/layers.rs"
    );
}

#[test]
fn the_reader_sees_what_the_rules_are_about() {
    // The reader itself: comments and strings are not code; use trees expand.
    let code = code_only(
        "use crate::{a::{b, c}, d as e};\n// crate::f\nlet x = \"crate::g\"; let y = crate::h::i(); let c = '\"'; let s = r#\"crate::j\"#;",
    );
    let me = vec!["m".to_string(), "n".to_string()];
    let mut got: Vec<String> = crate_paths(&code, &me)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    got.sort();
    assert_eq!(got, ["a::b", "a::c", "d", "h::i"]);
    let up = crate_paths("use super::super::store::Store;", &me);
    assert_eq!(up, [vec!["store".to_string(), "Store".to_string()]]);
    assert!(names("let x = sled::Db;", "sled") && !names("let x = sledge;", "sled"));
}
