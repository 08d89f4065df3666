//! A crate's files and the imports between them, read as text: each file's
//! module path (`a/b.rs` and `a/b/mod.rs` are `a::b`), its code without
//! comments, literals and `#[cfg(test)]` items, and the files its `use`
//! trees and written paths (`crate::`, `super::`, `self::` or a child
//! module's name) name, through re-exports (`crate::Error` is the file that
//! defines it, not `lib.rs`). An arrow to an enclosing module's file is not
//! an arrow: a parent declares its children and holds what they share.
//! Enough to find module cycles; not a Rust parser.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The files of one crate's `src/`.
pub struct Tree {
    /// By path under `src/`: its module path and its code.
    files: BTreeMap<PathBuf, (Vec<String>, String)>,
    /// By path under `src/`: each name its `use` items bring in, and the
    /// path it stands for.
    uses: BTreeMap<PathBuf, BTreeMap<String, Vec<String>>>,
}

impl Tree {
    /// Reads every `.rs` file under `src`, test modules in files of their
    /// own left out.
    pub fn read(src: &Path) -> Tree {
        let mut paths = Vec::new();
        walk(src, &mut paths);
        let mut files = BTreeMap::new();
        let mut tests = BTreeSet::new();
        for path in paths {
            let rel = path.strip_prefix(src).unwrap().to_path_buf();
            let module = module_of(&rel);
            let text = std::fs::read_to_string(&path).unwrap();
            let (code, test_modules) = code_of(&text);
            for name in test_modules {
                let mut child = module.clone();
                child.push(name);
                tests.insert(child);
            }
            files.insert(rel, (module, code));
        }
        files.retain(|_, (module, _)| !tests.iter().any(|t| module.starts_with(t)));
        let uses = files
            .iter()
            .map(|(path, (_, code))| (path.clone(), use_leaves(code).into_iter().collect()))
            .collect();
        Tree { files, uses }
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Each file with its code (comments, literals and tests left out).
    pub fn code(&self) -> impl Iterator<Item = (&PathBuf, &String)> {
        self.files.iter().map(|(path, (_, code))| (path, code))
    }

    /// The file that defines what `module` names (a module, or an item of
    /// the nearest module that holds it), through `use` items: at most
    /// `hops` of them.
    fn file_of(&self, module: &[String], hops: u8) -> Option<&PathBuf> {
        let (n, path) = (0..=module.len()).rev().find_map(|n| {
            self.files
                .iter()
                .find(|(_, (m, _))| m.as_slice() == &module[..n])
                .map(|(path, _)| (n, path))
        })?;
        let rest = &module[n..];
        if let (Some(name), true) = (rest.first(), hops > 0)
            && let Some(written) = self.uses[path].get(name)
        {
            let mut through = written.clone();
            through.extend(rest[1..].iter().cloned());
            let here = &self.files[path].0;
            if let Some(found) = self.resolve_from(here, &through, hops - 1) {
                return Some(found);
            }
        }
        Some(path)
    }

    /// The files each file imports (itself left out).
    fn arrows(&self) -> BTreeMap<&PathBuf, BTreeSet<&PathBuf>> {
        let mut arrows = BTreeMap::new();
        for (path, (module, code)) in &self.files {
            let here = module.clone();
            let mut to = BTreeSet::new();
            for written in paths_in(code) {
                if let Some(target) = self.resolve(&here, &written) {
                    let enclosing = here.starts_with(&self.files[target].0);
                    if target != path && !enclosing {
                        to.insert(target);
                    }
                }
            }
            arrows.insert(path, to);
        }
        arrows
    }

    /// The file a path written in module `here` names, if it is in the crate.
    fn resolve(&self, here: &[String], written: &[String]) -> Option<&PathBuf> {
        self.resolve_from(here, written, 8)
    }

    fn resolve_from(&self, here: &[String], written: &[String], hops: u8) -> Option<&PathBuf> {
        let mut module: Vec<String> = here.to_vec();
        let mut rest = written;
        match rest.first()?.as_str() {
            "crate" => {
                module.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    module.pop()?;
                    rest = &rest[1..];
                }
            }
            child => {
                let mut path = module.clone();
                path.push(child.to_string());
                if !self.files.values().any(|(m, _)| *m == path) {
                    return None;
                }
            }
        }
        module.extend(rest.iter().cloned());
        self.file_of(&module, hops)
    }

    /// Every module cycle: for each set of files that reach each other, the
    /// shortest way from its first file (by name) back to it.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let arrows = self.arrows();
        let reach = |from: &PathBuf| -> BTreeSet<&PathBuf> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from];
            while let Some(at) = todo.pop() {
                for to in &arrows[at] {
                    if seen.insert(*to) {
                        todo.push(to);
                    }
                }
            }
            seen
        };
        let reached: BTreeMap<&PathBuf, BTreeSet<&PathBuf>> =
            self.files.keys().map(|p| (p, reach(p))).collect();
        let mut done = BTreeSet::new();
        let mut cycles = Vec::new();
        for (start, from_start) in &reached {
            if done.contains(start) || !from_start.contains(start) {
                continue;
            }
            let circle: BTreeSet<&PathBuf> = from_start
                .iter()
                .copied()
                .filter(|p| reached[p].contains(start))
                .collect();
            done.extend(circle.iter().copied());
            cycles.push(shortest_cycle(&arrows, start, &circle));
        }
        cycles
    }
}

/// The shortest way from `start` back to it through `circle` (breadth first).
fn shortest_cycle(
    arrows: &BTreeMap<&PathBuf, BTreeSet<&PathBuf>>,
    start: &PathBuf,
    circle: &BTreeSet<&PathBuf>,
) -> Vec<String> {
    let mut came_from: BTreeMap<&PathBuf, &PathBuf> = BTreeMap::new();
    let mut front = vec![start];
    'search: while !front.is_empty() {
        let mut next = Vec::new();
        for at in front {
            for to in &arrows[at] {
                if !circle.contains(to) || came_from.contains_key(to) {
                    continue;
                }
                came_from.insert(to, at);
                if *to == start {
                    break 'search;
                }
                next.push(*to);
            }
        }
        front = next;
    }
    let mut way = vec![start];
    let mut at = came_from[start];
    while at != start {
        way.push(at);
        at = came_from[at];
    }
    way.push(start);
    way.reverse();
    way.iter().map(|p| p.display().to_string()).collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` the root.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let last = parts.pop().unwrap();
    if !(last == "mod" || (parts.is_empty() && (last == "lib" || last == "main"))) {
        parts.push(last);
    }
    parts
}

/// The code of a file without comments, string and char literals, and
/// `#[cfg(test)]` items; and the test modules it declares in files of
/// their own (`#[cfg(test)] mod tests;`).
fn code_of(text: &str) -> (String, Vec<String>) {
    let bare = without_comments_and_literals(text);
    let mut code = String::new();
    let mut tests = Vec::new();
    let mut rest = bare.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        code.push_str(&rest[..at]);
        let item = rest[at + "#[cfg(test)]".len()..].trim_start();
        let end = match item.find([';', '{']) {
            Some(i) if item.as_bytes()[i] == b';' => {
                let head: Vec<&str> = item[..i].split_whitespace().collect();
                if let ["mod", name] | ["pub", "mod", name] | ["pub(crate)", "mod", name] =
                    head.as_slice()
                {
                    tests.push((*name).to_string());
                }
                i + 1
            }
            Some(i) => i + matching_brace(&item[i..]),
            None => item.len(),
        };
        rest = &item[end..];
    }
    code.push_str(rest);
    (code, tests)
}

/// The length of the block that starts at `text`'s `{`, braces included.
fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

fn without_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string(&chars, i) {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `r` at `i` starts a raw string (`r"`, `r#"`), not an identifier.
fn raw_string(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).map(|b| chars[b]);
    if before.is_some_and(|b| b.is_alphanumeric() || b == '_') {
        return false;
    }
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
}

/// Whether `'` at `i` opens a char literal rather than a lifetime.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!(
        (chars.get(i + 1), chars.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// Every module path the code names: each leaf of its `use` trees, and each
/// path of two or more segments written elsewhere.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    let mut plain = String::new();
    while let Some(at) = find_use(rest) {
        plain.push_str(&rest[..at]);
        let tree_start = at + "use ".len();
        let end = rest[tree_start..]
            .find(';')
            .map_or(rest.len(), |e| tree_start + e);
        let mut leaves = Vec::new();
        expand(&rest[tree_start..end], &mut Vec::new(), &mut leaves);
        out.extend(leaves.into_iter().map(|(_, path)| path));
        rest = &rest[(end + 1).min(rest.len())..];
    }
    plain.push_str(rest);
    let words: Vec<&str> = plain
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '$'))
        .collect();
    for word in words {
        if word.starts_with('$') || !word.contains("::") {
            continue;
        }
        let segments: Vec<String> = word
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if segments.len() >= 2 {
            out.push(segments);
        }
    }
    out
}

/// Each name the `use` items of `code` bring in, with the path it stands
/// for (globs bring in no name).
fn use_leaves(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let tree_start = at + "use ".len();
        let end = rest[tree_start..]
            .find(';')
            .map_or(rest.len(), |e| tree_start + e);
        if !rest[tree_start..end].trim_end().ends_with('*') {
            expand(&rest[tree_start..end], &mut Vec::new(), &mut out);
        }
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out
}

/// Where the next `use` item starts (the keyword as a whole word).
fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let before = code[..at].chars().next_back();
        if before.is_none_or(|b| !(b.is_alphanumeric() || b == '_')) {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// Expands one `use` tree (`a::{b, c::{d, self}}`) into its leaves.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth = prefix.len();
        prefix.extend(head);
        for part in split_top(inner) {
            expand(part, prefix, out);
        }
        prefix.truncate(depth);
        return;
    }
    let mut parts = tree.split(" as ");
    let leaf = parts.next().unwrap_or("").trim();
    let alias = parts.next().map(str::trim);
    let mut path = prefix.clone();
    path.extend(
        leaf.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*")
            .map(str::to_string),
    );
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    if let Some(last) = path.last().cloned() {
        out.push((alias.unwrap_or(&last).to_string(), path));
    }
}

/// Splits `a, b::{c, d}, e` at its top-level commas.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}
