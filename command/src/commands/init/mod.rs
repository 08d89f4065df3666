//! `warren init DIR [--lang rust|python|php]`: a new pipeline folder
//! (DESIGN.md, "Command line"): `pipeline.yaml` with comments, a worker in
//! that language on its package (or the framework), an input, and a README
//! with the commands that run it. The folder must not exist or be empty:
//! nothing is ever overwritten.

mod name;
pub mod templates;

use std::{
    fs,
    io::{ErrorKind, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub use templates::Lang;

use crate::exit::Usage;

/// Makes the pipeline folder `dir` for `lang` and prints what it made and
/// the commands that run it. A `dir` that is a file, or a folder with
/// anything in it, is wrong usage (exit 2), and nothing is written.
pub fn run(dir: &Path, lang: Lang) -> Result<()> {
    check_free(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot make the folder {}", dir.display()))?;
    let name = name::from_folder(&folder_name(dir)?);
    let files = templates::files(lang, &name);
    for (path, text) in &files {
        write_new(&dir.join(path), text)?;
    }
    let listed: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    out!(
        "made {}: pipeline `{name}` with a {} worker ({})",
        dir.display(),
        lang.name(),
        listed.join(", ")
    );
    out!("run it (README.md says more):");
    out!("  cd {}", shell_word(&dir.display().to_string()));
    for command in templates::commands(&files) {
        out!("  {command}");
    }
    Ok(())
}

/// Refuses a `dir` that exists and is not an empty folder.
fn check_free(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) if error.kind() == ErrorKind::NotADirectory || dir.is_file() => {
            return Err(Usage(format!(
                "{} exists and is not a folder: warren init makes a new pipeline folder; name one that does not exist",
                dir.display()
            ))
            .into());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read the folder {}", dir.display()));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    let more = if names.len() > 3 { ", ..." } else { "" };
    Err(Usage(format!(
        "{} is not empty (it holds {shown}{more}): warren init writes only into a new or empty folder, so that it overwrites nothing; name another",
        dir.display()
    ))
    .into())
}

/// The name of the folder `dir` (made by now), `.` and `..` resolved.
fn folder_name(dir: &Path) -> Result<String> {
    let absolute: PathBuf = fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the folder {}", dir.display()))?;
    Ok(absolute
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// Writes a file that must not exist yet (its folder made if needed).
fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot make the folder {}", parent.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `word` quoted for a shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%".contains(c));
    if plain && !word.is_empty() {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("hello"), "hello");
        assert_eq!(shell_word("../my-app/x_1"), "../my-app/x_1");
        assert_eq!(shell_word("my app"), "'my app'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
