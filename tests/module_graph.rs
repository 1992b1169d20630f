//! No import cycles between modules (issue #14): read `src/` as text, std only, and fail on
//! any cycle of `crate::` / `super::` paths between the top-level modules of `lib.rs`, or
//! between the sibling submodules of a directory module (`config/`, `events/`, ...).
//!
//! Code under `#[cfg(test)]` is left out: a unit test may drive its module through a higher
//! one (the bridge's tests through `node` and `http`) without the library depending on it.
//!
//! A cycle means neither side can be understood, tested or moved without the other; the
//! usual fix is to move what both need below both (as `stats.rs` was moved out of `flow/`).
//! Nothing is allow-listed: a new cycle fails here with the edges and where each is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge is written: the first place, as `file:line`.
type Edges = BTreeMap<(String, String), String>;

/// A source file and the module path it defines (`src/config/json.rs` -> `config::json`).
struct Source {
    file: String,
    module: Vec<String>,
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut test_only: Vec<Vec<String>> = Vec::new();
    let all: Vec<Source> = files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&root).unwrap();
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module.first().is_some_and(|m| m == "main" || m == "bin") {
                return None;
            }
            if module == ["lib"] {
                module.clear();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let (code, tests) = without_tests(&strip(&text));
            for name in tests {
                let mut m = module.clone();
                m.push(name);
                test_only.push(m);
            }
            Some(Source {
                file: format!("src/{}", rel.display()),
                module,
                code,
            })
        })
        .collect();
    // The crate root is not a module of the graph; test-only files are not part of it either.
    all.into_iter()
        .filter(|s| !s.module.is_empty() && !test_only.iter().any(|t| s.module.starts_with(t)))
        .collect()
}

/// The code with every `#[cfg(test)]` item blanked, and the names of the `#[cfg(test)] mod
/// name;` files it declares.
fn without_tests(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut b: Vec<char> = code.chars().collect();
    let mut files = Vec::new();
    let mut from = 0;
    loop {
        let text: String = b[from..].iter().collect();
        let Some(off) = text.find(ATTR) else { break };
        let start = from + text[..off].chars().count();
        let mut i = start + ATTR.len();
        // The item ends at its first `;` (or `,`, for a field) outside braces, at the brace
        // closing its body, or where the block around it closes.
        let mut depth = 0usize;
        let mut parens = 0usize;
        let mut body = false;
        let mut end = b.len();
        while i < b.len() {
            match b[i] {
                '(' | '[' => parens += 1,
                ')' | ']' => parens = parens.saturating_sub(1),
                '{' => {
                    depth += 1;
                    body = true;
                }
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                ',' if depth == 0 && parens == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item: String = b[start + ATTR.len()..end].iter().collect();
        let words: Vec<&str> = item.trim_end_matches(';').split_whitespace().collect();
        if !body && words.len() == 2 && words[0] == "mod" {
            files.push(words[1].to_owned());
        }
        for c in &mut b[start..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        from = end;
    }
    (b.into_iter().collect(), files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code with comments, strings and char literals blanked (newlines kept, so line
/// numbers stay right): a path in a doc comment or a message is not an import.
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                let skip = if b[i] == '\\' { 2 } else { 1 };
                for &ch in &b[i..(i + skip).min(b.len())] {
                    out.push(blank(ch));
                }
                i += skip;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a), left as is.
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for _ in i..=e {
                        out.push(' ');
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path starting with `crate::`, `super::` or `self::`, resolved to an absolute module
/// path (`use a::{b, c::d}` groups expanded), with its line.
fn paths(src: &Source) -> Vec<(Vec<String>, usize)> {
    let b: Vec<char> = src.code.chars().collect();
    let mut found = Vec::new();
    let (mut line, mut counted) = (1, 0);
    let mut i = 0;
    while i < b.len() {
        let at_start = i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == ':');
        if at_start && is_ident(b[i]) {
            let word: String = b[i..].iter().take_while(|c| is_ident(**c)).collect();
            if matches!(word.as_str(), "crate" | "super" | "self") {
                line += b[counted..i].iter().filter(|c| **c == '\n').count();
                counted = i;
                let mut end = i;
                for p in group(&b, &mut end) {
                    found.push((resolve(&src.module, &p), line));
                }
                i = end.max(i + word.len());
                continue;
            }
            i += word.len();
            continue;
        }
        i += 1;
    }
    found
}

/// The paths written at `b[*i..]`: one path, or several when it ends in a `{...}` group.
fn group(b: &[char], i: &mut usize) -> Vec<Vec<String>> {
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut prefix = Vec::new();
    loop {
        skip_ws(i);
        if *i < b.len() && b[*i] == '{' {
            *i += 1;
            let mut all = Vec::new();
            loop {
                skip_ws(i);
                if *i >= b.len() {
                    return all;
                }
                if b[*i] == '}' {
                    *i += 1;
                    return all;
                }
                if b[*i] == ',' {
                    *i += 1;
                    continue;
                }
                let start = *i;
                for tail in group(b, i) {
                    let mut p = prefix.clone();
                    p.extend(tail);
                    all.push(p);
                }
                if *i == start {
                    // `*` or `as name`: nothing more to learn; skip a character.
                    *i += 1;
                }
            }
        }
        let word: String = b[*i..].iter().take_while(|c| is_ident(**c)).collect();
        if word.is_empty() {
            return vec![prefix];
        }
        *i += word.len();
        prefix.push(word);
        skip_ws(i);
        if b.get(*i) == Some(&':') && b.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// `crate::a::b` -> `[a, b]`; `super::x` from `m::n` -> `[m, x]`.
fn resolve(module: &[String], path: &[String]) -> Vec<String> {
    let mut at: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &rest[1..];
        }
        _ => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        at.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
    }
    at.extend(rest.iter().cloned());
    at
}

/// Edges between the children of `parent` (`[]`: the top-level modules), each with where it
/// is first written.
fn edges(sources: &[Source], parent: &[String]) -> Edges {
    let depth = parent.len();
    let children: BTreeSet<String> = sources
        .iter()
        .filter(|s| s.module.len() > depth && s.module[..depth] == *parent)
        .map(|s| s.module[depth].clone())
        .collect();
    let mut out = Edges::new();
    for s in sources {
        if s.module.len() <= depth || s.module[..depth] != *parent {
            continue;
        }
        let from = &s.module[depth];
        for (target, line) in paths(s) {
            if target.len() <= depth || target[..depth] != *parent {
                continue;
            }
            let to = &target[depth];
            if to != from && children.contains(to) {
                out.entry((from.clone(), to.clone()))
                    .or_insert_with(|| format!("{}:{line}", s.file));
            }
        }
    }
    out
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    scc.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for (a, b) in edges.keys() {
        t.next.entry(a.as_str()).or_default().push(b.as_str());
        t.next.entry(b.as_str()).or_default();
    }
    let nodes: Vec<&str> = t.next.keys().copied().collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}

/// Each cycle with the edges inside it and where they are written.
fn report(scope: &str, edges: &Edges) -> String {
    let mut text = String::new();
    for scc in cycles(edges) {
        text.push_str(&format!("cycle in {scope}: {}\n", scc.join(", ")));
        for ((a, b), at) in edges {
            if scc.contains(a) && scc.contains(b) {
                text.push_str(&format!("  {a} -> {b}  ({at})\n"));
            }
        }
    }
    text
}

#[test]
fn no_cycles_between_top_level_modules() {
    let src = sources();
    let text = report("src/", &edges(&src, &[]));
    assert!(text.is_empty(), "{text}");
}

#[test]
fn no_cycles_between_submodules() {
    let src = sources();
    let dirs: BTreeSet<Vec<String>> = src
        .iter()
        .filter(|s| s.module.len() > 1)
        .map(|s| s.module[..s.module.len() - 1].to_vec())
        .collect();
    let mut text = String::new();
    for dir in dirs {
        text.push_str(&report(
            &format!("src/{}/", dir.join("/")),
            &edges(&src, &dir),
        ));
    }
    assert!(text.is_empty(), "{text}");
}

/// The parser itself, on the forms the tree uses.
#[test]
fn paths_are_read_from_code_only() {
    let src = Source {
        file: "src/a/b.rs".into(),
        module: vec!["a".into(), "b".into()],
        code: without_tests(&strip(
            "use crate::{x::Y, z};\nuse super::{c, d::E};\n// crate::commented\n\
             let s = \"crate::quoted\";\nlet c = '\"'; crate::w::f();\n\
             #[cfg(test)]\nmod tests {\n    use crate::t::{T, U};\n}\n",
        ))
        .0,
    };
    let got: Vec<(String, usize)> = paths(&src)
        .into_iter()
        .map(|(p, l)| (p.join("::"), l))
        .collect();
    let want = [
        ("x::Y", 1),
        ("z", 1),
        ("a::c", 2),
        ("a::d::E", 2),
        ("w::f", 5),
    ];
    let want: Vec<(String, usize)> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(got, want);
}

/// Prints every edge (`cargo test --test module_graph -- --nocapture graph`), to see what
/// a cycle's fix would have to move.
#[test]
fn graph() {
    let src = sources();
    for ((a, b), at) in edges(&src, &[]) {
        println!("{a} -> {b}  ({at})");
    }
}
