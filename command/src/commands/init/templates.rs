//! What `warren init` writes for each language: the files under
//! `command/templates/init/`, with `{{name}}` (the pipeline's name) and
//! `{{crate}}` (the Rust package's name) filled in.

use clap::ValueEnum;

/// The language of the new pipeline's worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// A worker program on the framework (a `command` stage).
    Rust,
    /// A Python program with the package warren-stage (an `exec` stage).
    Python,
    /// A PHP program with the Composer package warren-pipelines/stage (an
    /// `exec` stage).
    Php,
}

impl Lang {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Php => "php",
        }
    }
}

/// The input every language's pipeline is run with in its README.
const NAMES: &str = include_str!("../../../templates/init/names.jsonl");

/// The files of a new pipeline folder: (path inside it, template).
fn templates(lang: Lang) -> Vec<(&'static str, &'static str)> {
    macro_rules! template {
        ($lang:literal, $file:literal) => {
            include_str!(concat!("../../../templates/init/", $lang, "/", $file))
        };
    }
    let mut files = match lang {
        Lang::Python => vec![
            ("pipeline.yaml", template!("python", "pipeline.yaml")),
            ("greet.py", template!("python", "greet.py")),
            ("README.md", template!("python", "README.md")),
        ],
        Lang::Php => vec![
            ("pipeline.yaml", template!("php", "pipeline.yaml")),
            ("greet.php", template!("php", "greet.php")),
            ("composer.json", template!("php", "composer.json")),
            ("README.md", template!("php", "README.md")),
        ],
        Lang::Rust => vec![
            ("pipeline.yaml", template!("rust", "pipeline.yaml")),
            ("Cargo.toml", template!("rust", "Cargo.toml")),
            ("src/main.rs", template!("rust", "main.rs")),
            ("README.md", template!("rust", "README.md")),
        ],
    };
    files.push(("names.jsonl", NAMES));
    files
}

/// The files of a new pipeline folder for `lang`, its pipeline called
/// `name` (a valid pipeline name): (path inside the folder, content).
pub fn files(lang: Lang, name: &str) -> Vec<(&'static str, String)> {
    let crate_name = format!("{name}-worker");
    templates(lang)
        .into_iter()
        .map(|(path, text)| {
            let text = text
                .replace("{{name}}", name)
                .replace("{{crate}}", &crate_name);
            (path, text)
        })
        .collect()
}

/// The commands that run the pipeline: the lines of the first `sh` block of
/// its README.
pub fn commands(files: &[(&'static str, String)]) -> Vec<String> {
    let Some((_, readme)) = files.iter().find(|(path, _)| *path == "README.md") else {
        return Vec::new();
    };
    readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(|block| block.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Php];

    #[test]
    fn every_placeholder_is_filled() {
        for lang in ALL {
            for (path, text) in files(lang, "shop") {
                assert!(!text.contains("{{"), "{lang:?} {path}: {text}");
            }
        }
    }

    #[test]
    fn every_language_has_a_pipeline_a_readme_and_the_input() {
        for lang in ALL {
            let files = files(lang, "shop");
            for wanted in ["pipeline.yaml", "README.md", "names.jsonl"] {
                assert!(files.iter().any(|(path, _)| *path == wanted), "{lang:?}");
            }
            let (_, pipeline) = &files[0];
            assert!(pipeline.contains("\npipeline: shop\n"), "{lang:?}");
        }
    }

    #[test]
    fn the_readme_has_the_three_commands() {
        for lang in ALL {
            let commands = commands(&files(lang, "shop"));
            assert_eq!(commands.len(), 3, "{lang:?}: {commands:?}");
            assert_eq!(commands[1], "warren validate pipeline.yaml");
            assert_eq!(commands[2], "warren run pipeline.yaml --input names.jsonl");
        }
    }

    #[test]
    fn the_rust_crate_is_named_after_the_pipeline() {
        let files = files(Lang::Rust, "shop");
        let text = |wanted: &str| {
            files
                .iter()
                .find(|(path, _)| *path == wanted)
                .map(|(_, text)| text.clone())
                .unwrap()
        };
        assert!(text("Cargo.toml").contains("name = \"shop-worker\""));
        assert!(text("pipeline.yaml").contains("command: [target/debug/shop-worker]"));
    }
}
