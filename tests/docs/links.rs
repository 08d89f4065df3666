//! Relative links and `#anchors` in Markdown, resolved the way GitHub does:
//! a link names a file relative to the file it is in, an anchor names a
//! heading by its slug. Pure functions, so that the checker itself is tested
//! on broken input.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

/// GitHub's slug of a heading's text: lowercase, every character that is
/// not a letter, a digit, a space, `-` or `_` dropped, each space a `-`.
pub fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The text a heading line shows (`## Batch runs: \`warren run\``), or `None`
/// for a line that is not a heading: without its `#`s, code marks,
/// emphasis and link targets.
fn heading_text(line: &str) -> Option<String> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
        return None;
    }
    let text = line[hashes..].trim().trim_end_matches('#').trim();
    let mut shown = String::new();
    let mut rest = text;
    // `[text](target)` shows `text`.
    while let Some(open) = rest.find('[') {
        shown.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            let end = after[close..].find(')')? + close;
            Some((close, end))
        }) {
            Some((close, end)) => {
                shown.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            None => {
                shown.push('[');
                rest = after;
            }
        }
    }
    shown.push_str(rest);
    Some(shown.replace(['`', '*'], ""))
}

/// The lines of `markdown` outside fenced code blocks, with their numbers
/// (from 1).
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(open) if trimmed.starts_with(open) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => lines.push((n + 1, line)),
        }
    }
    lines
}

/// Every anchor `markdown` has: its headings' slugs, a repeated slug
/// numbered `-1`, `-2`, ... as GitHub does.
pub fn anchors(markdown: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for (_, line) in prose_lines(markdown) {
        let Some(text) = heading_text(line) else {
            continue;
        };
        let base = slug(&text);
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// A link found in prose: its line and its target (`file.md#anchor`), or a
/// problem with the link itself.
#[derive(Debug, PartialEq)]
pub struct Link {
    /// Line of the `](`, from 1.
    pub line: usize,
    /// The target as written, or `Err` with what is wrong with it.
    pub target: Result<String, String>,
}

/// The links of `markdown`'s prose: inline links and images (`[t](x)`,
/// `![t](x)`) and reference definitions (`[t]: x`). Code spans (which may
/// run over a line break) and fenced blocks are not prose.
pub fn links(markdown: &str) -> Vec<Link> {
    let mut found = Vec::new();
    // Code spans: a run of backticks opens one, the same run closes it; a
    // blank line ends a paragraph (and any span left open in it).
    let mut in_code: Option<usize> = None;
    for (number, line) in prose_lines(markdown) {
        if line.trim().is_empty() {
            in_code = None;
            continue;
        }
        if in_code.is_none()
            && let Some(target) = reference_definition(line)
        {
            found.push(Link {
                line: number,
                target: Ok(target),
            });
            continue;
        }
        let mut prose = String::new();
        let mut chars = line.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c == '`' {
                let mut run = 1;
                while chars.next_if(|&(_, c)| c == '`').is_some() {
                    run += 1;
                }
                in_code = match in_code {
                    Some(open) if open == run => None,
                    Some(open) => Some(open),
                    None => Some(run),
                };
                prose.push(' ');
            } else if in_code.is_none() {
                prose.push(c);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let target = match after.find(')') {
                None => Err(format!(
                    "a link whose target does not end on its line: `{}`",
                    after.trim()
                )),
                Some(end) => {
                    let inside = after[..end].trim();
                    // `(target "title")`, `(<target>)`
                    let target = inside.split_whitespace().next().unwrap_or("");
                    Ok(target.trim_matches(['<', '>']).to_string())
                }
            };
            found.push(Link {
                line: number,
                target,
            });
            rest = after;
        }
    }
    found
}

/// The target of a reference definition line, `[label]: target`.
fn reference_definition(line: &str) -> Option<String> {
    let line = line.trim_start();
    let rest = line.strip_prefix('[')?;
    let close = rest.find("]:")?;
    if close == 0 || rest[..close].contains(['[', ']']) {
        return None;
    }
    rest[close + 2..]
        .split_whitespace()
        .next()
        .map(|t| t.trim_matches(['<', '>']).to_string())
}

/// Whether a target leaves the repository (`https://...`, `mailto:`).
fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Every problem with the links of `files` (Markdown files under `root`):
/// a target that does not exist, an anchor that no heading of its file
/// has, an absolute path, a link cut by a line break. Each names the file,
/// the line and the link.
pub fn check(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut anchors_of: HashMap<PathBuf, Option<HashSet<String>>> = HashMap::new();
    let mut anchors_in = |path: &Path| -> Option<HashSet<String>> {
        anchors_of
            .entry(path.to_path_buf())
            .or_insert_with(|| std::fs::read_to_string(path).ok().map(|t| anchors(&t)))
            .clone()
    };
    for file in files {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        let Ok(text) = std::fs::read_to_string(file) else {
            problems.push(format!("{shown}: cannot be read"));
            continue;
        };
        for link in links(&text) {
            let at = format!("{shown}:{}", link.line);
            let target = match link.target {
                Ok(target) => target,
                Err(problem) => {
                    problems.push(format!("{at}: {problem}"));
                    continue;
                }
            };
            if is_external(&target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            if path.starts_with('/') {
                problems.push(format!(
                    "{at}: `{target}` is an absolute path; write it relative to {shown}"
                ));
                continue;
            }
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(root).join(path)
            };
            if !resolved.exists() {
                problems.push(format!("{at}: `{target}`: there is no {path}"));
                continue;
            }
            let Some(anchor) = anchor else {
                continue;
            };
            if resolved.extension().is_none_or(|e| e != "md") {
                problems.push(format!(
                    "{at}: `{target}`: an anchor on a file that is not Markdown"
                ));
                continue;
            }
            match anchors_in(&resolved) {
                Some(anchors) if anchors.contains(anchor) => {}
                Some(anchors) => {
                    let mut known: Vec<_> = anchors.into_iter().collect();
                    known.sort();
                    problems.push(format!(
                        "{at}: `{target}`: no heading of {} has the anchor `{anchor}` (it has: {})",
                        if path.is_empty() { &shown } else { path },
                        known.join(", ")
                    ));
                }
                None => problems.push(format!("{at}: `{target}`: cannot be read")),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_githubs() {
        assert_eq!(slug("Quick start"), "quick-start");
        assert_eq!(
            heading_text("## Batch runs: `warren run`, `send`, `drain`, `dlq`").map(|t| slug(&t)),
            Some("batch-runs-warren-run-send-drain-dlq".into())
        );
        assert_eq!(
            heading_text("### The [contract](contract.md) (v0.1)").map(|t| slug(&t)),
            Some("the-contract-v01".into())
        );
        assert_eq!(
            slug("Faults, and what survives what"),
            "faults-and-what-survives-what"
        );
        assert_eq!(slug("exec_stages & more"), "exec_stages--more");
        assert_eq!(heading_text("#hashtag"), None);
        assert_eq!(heading_text("####### seven"), None);
    }

    #[test]
    fn repeated_headings_are_numbered_and_code_is_not_a_heading() {
        let anchors = anchors("# A\n## Same\n```sh\n# a comment\n```\n## Same\n### Same\n");
        let mut anchors: Vec<_> = anchors.into_iter().collect();
        anchors.sort();
        assert_eq!(anchors, ["a", "same", "same-1", "same-2"]);
    }

    #[test]
    fn links_skip_code_and_report_a_cut_target() {
        let text = "See [a](a.md) and `[b](b.md)` and ``[c](c.md)``,\n\
                    `a span that runs\n\
                    over a line [d](d.md)` then [e](e.md#x \"title\")\n\
                    ```\n[f](f.md)\n```\n\
                    [g]: g.md\n\
                    [h](h-\n";
        let targets: Vec<_> = links(text)
            .into_iter()
            .map(|l| (l.line, l.target))
            .collect();
        assert_eq!(
            targets,
            [
                (1, Ok("a.md".to_string())),
                (3, Ok("e.md#x".to_string())),
                (7, Ok("g.md".to_string())),
                (
                    8,
                    Err("a link whose target does not end on its line: `h-`".to_string())
                ),
            ]
        );
    }

    #[test]
    fn the_checker_reports_broken_links_and_anchors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap();
            dir.path().join(name)
        };
        write("b.md", "# B\n## There `it` is\n");
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        let a = write(
            "a.md",
            "# A\n## Twice\n## Twice\n\
             [ok](#twice-1) [ok](b.md#there-it-is) [ok](folder/) [ok](https://x.example/#y)\n\
             [gone](#nope) [missing](c.md) [no anchor](b.md#here)\n\
             [absolute](/b.md) [not markdown](folder#x)\n",
        );
        let problems = check(dir.path(), &[a]);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(
            problems[0].starts_with("a.md:5: `#nope`: no heading of a.md"),
            "{problems:#?}"
        );
        assert_eq!(problems[1], "a.md:5: `c.md`: there is no c.md");
        assert!(
            problems[2].contains(
                "`b.md#here`: no heading of b.md has the anchor `here` (it has: b, there-it-is)"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[3].contains("`/b.md` is an absolute path"),
            "{problems:#?}"
        );
        assert!(
            problems[4].contains("an anchor on a file that is not Markdown"),
            "{problems:#?}"
        );
    }
}
