//! The tutorial's marked blocks, read from its Markdown and turned into one
//! shell script. A marker is an HTML comment (invisible on GitHub and in the
//! book) on the line before a fenced block:
//!
//! - `<!-- tutorial: NAME -->`: shell commands, run in the order of the page;
//! - `<!-- tutorial: NAME file=PATH -->`: the block is saved as PATH
//!   (relative to the directory the commands before it left);
//! - `<!-- tutorial: NAME expect -->`: the block is exactly what the
//!   commands of the last block before it printed on stdout.

/// One marked block.
#[derive(Debug, PartialEq)]
pub enum Block {
    /// Commands to run.
    Run(String),
    /// A file to write.
    File {
        /// Where, relative to the current directory at that point.
        path: String,
        /// Its content.
        text: String,
    },
    /// What the last `Run` block printed on stdout.
    Expect(String),
}

/// The marked blocks of `markdown`, in order, all of which must belong to
/// the tutorial `name` (a marker naming another, or not followed by a
/// fenced block, is an error, so that a typo does not skip a block).
pub fn blocks(markdown: &str, name: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!-- tutorial:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let mut words = marker.split_whitespace();
        let marked = words.next().unwrap_or("");
        if marked != name {
            return Err(format!(
                "line {}: a marker of tutorial `{marked}` in the `{name}` tutorial",
                n + 1
            ));
        }
        let option = words.next();
        let fence = lines
            .by_ref()
            .map(|(_, l)| l.trim())
            .find(|l| !l.is_empty())
            .filter(|l| l.starts_with("```"))
            .ok_or_else(|| {
                format!(
                    "line {}: the marker is not followed by a fenced block",
                    n + 1
                )
            })?;
        let mut text = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                closed = true;
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        if !closed {
            return Err(format!("line {}: the block `{fence}` is not closed", n + 1));
        }
        blocks.push(match option {
            None => Block::Run(text),
            Some("expect") => Block::Expect(text),
            Some(file) if file.starts_with("file=") => Block::File {
                path: file["file=".len()..].to_string(),
                text,
            },
            Some(other) => return Err(format!("line {}: unknown option `{other}`", n + 1)),
        });
    }
    Ok(blocks)
}

/// The line the script prints on stdout before the commands of the `n`th
/// `Run` block, to split what they printed.
pub fn separator(n: usize) -> String {
    format!("@@warren-tutorial-block-{n}@@")
}

/// The blocks as one bash script (run with `set -eu`): commands as written,
/// files written with quoted here-documents, a separator line before each
/// `Run` block. `Expect` blocks are checked afterwards with [`expected`].
pub fn script(blocks: &[Block]) -> String {
    let mut script = String::from("set -eu\n");
    let mut run = 0;
    for block in blocks {
        match block {
            Block::Run(commands) => {
                script.push_str(&format!("echo '{}'\n{commands}", separator(run)));
                run += 1;
            }
            Block::File { path, text } => {
                let quoted = format!("'{}'", path.replace('\'', r"'\''"));
                script.push_str(&format!(
                    "mkdir -p \"$(dirname {quoted})\"\ncat > {quoted} <<'WARREN_TUTORIAL_EOF'\n{text}WARREN_TUTORIAL_EOF\n"
                ));
            }
            Block::Expect(_) => {}
        }
    }
    script
}

/// Each `Expect` block with the index of the `Run` block whose output it
/// shows.
pub fn expected(blocks: &[Block]) -> Result<Vec<(usize, &str)>, String> {
    let mut runs = 0;
    let mut expected = Vec::new();
    for block in blocks {
        match block {
            Block::Run(_) => runs += 1,
            Block::Expect(text) if runs > 0 => expected.push((runs - 1, text.as_str())),
            Block::Expect(text) => {
                return Err(format!("an expected output before any command: {text}"));
            }
            Block::File { .. } => {}
        }
    }
    Ok(expected)
}

/// What each `Run` block printed, from the script's stdout.
pub fn outputs(stdout: &str) -> Vec<String> {
    let mut outputs: Vec<String> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("@@warren-tutorial-block-") {
            outputs.push(String::new());
        } else if let Some(last) = outputs.last_mut() {
            last.push_str(line.trim_end());
            last.push('\n');
        }
    }
    outputs
}

/// `word` replaced by `with` wherever it stands alone (not inside a longer
/// name of `[a-z0-9_-]` characters): the pipeline's name in a file or an
/// output, without touching `hello-rust` or `Hello`.
pub fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let alone = !before.is_some_and(is_name) && !after.is_some_and(is_name);
        out.push_str(&rest[..at]);
        out.push_str(if alone { with } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# T\n\
        <!-- tutorial: demo -->\n```sh\nmkdir x && cd x\n```\n\
        Save it:\n\n<!-- tutorial: demo file=it's.yaml -->\n\n```yaml\npipeline: hello\n```\n\
        ```sh\nnot marked\n```\n\
        <!-- tutorial: demo -->\n```sh\ncat it*.yaml\n```\n\
        <!-- tutorial: demo expect -->\n```text\npipeline: hello\n```\n";

    #[test]
    fn marked_blocks_become_one_script_in_page_order() {
        let blocks = blocks(PAGE, "demo").unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(
            script(&blocks),
            "set -eu\necho '@@warren-tutorial-block-0@@'\nmkdir x && cd x\n\
             mkdir -p \"$(dirname 'it'\\''s.yaml')\"\n\
             cat > 'it'\\''s.yaml' <<'WARREN_TUTORIAL_EOF'\npipeline: hello\nWARREN_TUTORIAL_EOF\n\
             echo '@@warren-tutorial-block-1@@'\ncat it*.yaml\n"
        );
        assert_eq!(expected(&blocks).unwrap(), [(1, "pipeline: hello\n")]);
        let out = outputs(
            "@@warren-tutorial-block-0@@\n@@warren-tutorial-block-1@@\npipeline: hello  \n",
        );
        assert_eq!(out, ["", "pipeline: hello\n"]);
    }

    #[test]
    fn a_wrong_marker_is_an_error_not_a_skipped_block() {
        assert!(
            blocks(PAGE, "other")
                .unwrap_err()
                .contains("tutorial `demo`")
        );
        let err = blocks("<!-- tutorial: demo -->\ntext\n```sh\nls\n```\n", "demo").unwrap_err();
        assert!(err.contains("not followed by a fenced block"), "{err}");
        let err = blocks("<!-- tutorial: demo -->\n```sh\nls\n", "demo").unwrap_err();
        assert!(err.contains("not closed"), "{err}");
    }

    #[test]
    fn only_the_whole_name_is_replaced() {
        assert_eq!(
            replace_word(
                "pipeline: hello\nhello.greet.dead `hello` hello-rust Hello othello",
                "hello",
                "t1"
            ),
            "pipeline: t1\nt1.greet.dead `t1` hello-rust Hello othello"
        );
    }
}
