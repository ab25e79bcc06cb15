//! `sfn-wasm-host new rust|js|python NAME [--dir DIR] [--sdk PATH]`: writes a standalone
//! handler project from the templates embedded in the binary (`host/templates/`), so that
//! a handler's first build works from an empty folder with nothing of this repository.
//!
//! Every project holds the greet handler (typed), a test of its logic that runs without
//! the host, `input.json`, a `config.toml` for `serve`, a one-state `state-machine.json`
//! retrying the host's retriable failures, a README and a `.gitignore`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sfn_wasm_host::outcome::HostFailure;

use super::EXIT_USAGE;

/// A template of `host/templates/`, embedded in the binary.
macro_rules! t {
    ($path:literal) => {
        include_str!(concat!("../../templates/", $path))
    };
}

/// The SDK version the projects depend on when no `--sdk` is given.
const SDK_VERSION: &str = "0.2.0";

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The handler's language.
    language: Language,
    /// The project's name: lowercase letters, digits and hyphens, starting with a letter
    /// (it is the crate's, the npm package's and the component's name).
    name: String,
    /// The folder to write (default: ./NAME); it must be missing or empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// This repository's `guest-sdk` folder: the project depends on the SDK there by
    /// path, as a user of an unpublished SDK would (default: the published version).
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Language {
    Rust,
    Js,
    Python,
}

impl Language {
    fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Js => "js",
            Language::Python => "python",
        }
    }

    /// The SDK's folder inside `guest-sdk`, and the file that shows it is there.
    fn sdk_marker(self) -> (&'static str, &'static str) {
        match self {
            Language::Rust => ("rust", "Cargo.toml"),
            Language::Js => ("js", "package.json"),
            Language::Python => ("python", "pyproject.toml"),
        }
    }

    /// The component the project's build writes, relative to the project.
    fn wasm(self, name: &str) -> String {
        match self {
            // Cargo names a cdylib after the crate, with `_` for `-`.
            Language::Rust => format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ),
            Language::Js | Language::Python => format!("{name}.wasm"),
        }
    }

    /// The project's own build, test and first-run commands, for the closing message.
    fn next_steps(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &[
                "rustup target add wasm32-wasip2   # once",
                "cargo build --release --target wasm32-wasip2",
                "cargo test",
            ],
            Language::Js => &["npm install && npm run build", "npm test"],
            Language::Python => &[
                "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt",
                "python3 -m sfn_wasm_guest build",
                "python3 -m unittest",
            ],
        }
    }

    /// The language's own files: (path in the project, template); every project also
    /// gets [`COMMON`].
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Language::Rust => &[
                ("Cargo.toml", t!("rust/Cargo.toml.tmpl")),
                ("src/lib.rs", t!("rust/src/lib.rs")),
                ("README.md", t!("rust/README.md")),
                (".gitignore", t!("rust/gitignore")),
            ],
            Language::Js => &[
                ("package.json", t!("js/package.json")),
                ("src/handler.js", t!("js/src/handler.js")),
                ("test/handler.test.js", t!("js/test/handler.test.js")),
                ("README.md", t!("js/README.md")),
                (".gitignore", t!("js/gitignore")),
            ],
            Language::Python => &[
                ("handler.py", t!("python/handler.py")),
                ("test_handler.py", t!("python/test_handler.py")),
                ("requirements.txt", t!("python/requirements.txt")),
                ("pyproject.toml", t!("python/pyproject.toml")),
                ("README.md", t!("python/README.md")),
                (".gitignore", t!("python/gitignore")),
            ],
        }
    }
}

/// The files every project has, whatever its language.
const COMMON: [(&str, &str); 3] = [
    ("input.json", t!("common/input.json")),
    ("config.toml", t!("common/config.toml")),
    ("state-machine.json", t!("common/state-machine.json")),
];

/// Writes the project. Exits 0 when written, 2 for a bad name, a non-empty folder or a
/// `--sdk` that is not the guest-sdk folder, 1 when a file could not be written.
pub fn run(args: NewArgs) -> ExitCode {
    if let Err(problem) = check_name(&args.name) {
        eprintln!("error: NAME {:?}: {problem}", args.name);
        return ExitCode::from(EXIT_USAGE);
    }
    let sdk = match args.sdk.as_deref().map(|p| sdk_folder(p, args.language)) {
        None => None,
        Some(Ok(folder)) => Some(folder),
        Some(Err(problem)) => {
            eprintln!("error: --sdk {problem}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if let Ok(mut entries) = fs::read_dir(&dir)
        && entries.next().is_some()
    {
        eprintln!(
            "error: {} is not empty: give an empty or new folder with --dir",
            dir.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let files = render(args.language, &args.name, sdk.as_deref());
    if let Err(err) = write_all(&dir, &files) {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    println!(
        "created {} handler {:?} in {}:",
        args.language.name(),
        args.name,
        dir.display()
    );
    for (path, _) in &files {
        println!("  {path}");
    }
    println!("next:\n  cd {}", dir.display());
    for step in args.language.next_steps() {
        println!("  {step}");
    }
    println!(
        "  sfn-wasm-host invoke {} --input-file input.json",
        args.language.wasm(&args.name)
    );
    ExitCode::SUCCESS
}

/// Why `name` cannot name a crate, an npm package and a file alike.
fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("may hold only lowercase letters, digits and hyphens");
    }
    if name.ends_with('-') || name.len() > 64 {
        return Err("must not end with a hyphen or be longer than 64 characters");
    }
    Ok(())
}

/// The language's SDK inside the guest-sdk folder `path`, as an absolute path.
fn sdk_folder(path: &Path, language: Language) -> Result<PathBuf, String> {
    let (folder, marker) = language.sdk_marker();
    let sdk = path
        .canonicalize()
        .map_err(|err| format!("{}: {err}", path.display()))?
        .join(folder);
    if !sdk.join(marker).is_file() {
        return Err(format!(
            "{}: no {folder}/{marker} there; give this repository's guest-sdk folder",
            path.display()
        ));
    }
    Ok(sdk)
}

/// The project's files with their placeholders filled: `{{name}}`, `{{wasm}}` (what the
/// build writes), `{{state}}`, `{{retriable}}`, and the SDK dependency (`{{patch}}`,
/// `{{sdk}}`).
fn render(language: Language, name: &str, sdk: Option<&Path>) -> Vec<(String, String)> {
    let state: String = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let retriable = serde_json::to_string(&HostFailure::RETRIABLE).unwrap_or_default();
    let sdk_path = sdk.map(|p| p.to_string_lossy().into_owned());
    let (patch, sdk_dep) = match (language, &sdk_path) {
        (Language::Rust, Some(path)) => (
            format!(
                "\n# sfn-wasm-guest is not on crates.io yet: build it from a local copy of its\n\
                 # source. Remove this section once it is published.\n\
                 [patch.crates-io]\nsfn-wasm-guest = {{ path = {} }}\n",
                toml::Value::String(path.clone())
            ),
            String::new(),
        ),
        (Language::Js, Some(path)) => (String::new(), format!("file:{path}")),
        (Language::Python, Some(path)) => (String::new(), path.clone()),
        (Language::Js, None) => (String::new(), format!("^{SDK_VERSION}")),
        (Language::Python, None) => (String::new(), format!("sfn-wasm-guest=={SDK_VERSION}")),
        (Language::Rust, None) => (String::new(), String::new()),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{wasm}}", &language.wasm(name))
            .replace("{{state}}", &state)
            .replace("{{retriable}}", &retriable)
            .replace("{{patch}}", &patch)
            .replace("{{sdk}}", &sdk_dep)
    };
    let mut files: Vec<(String, String)> = language
        .templates()
        .iter()
        .chain(&COMMON)
        .map(|(path, template)| ((*path).to_owned(), fill(template)))
        .collect();
    if language == Language::Js && sdk.is_some() {
        // npm links a `file:` dependency without installing its own dependencies;
        // installing it as a packed copy gives it them, as the published package would.
        files.push((
            ".npmrc".to_owned(),
            "# sfn-wasm-guest comes from a local folder (package.json): install it as a copy,\n\
             # with its own dependencies, as the published package would be.\n\
             install-links=true\n"
                .to_owned(),
        ));
    }
    files
}

/// Writes every file under `dir`, creating folders; never overwrites.
fn write_all(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        let folder = path.parent().unwrap_or(dir);
        fs::create_dir_all(folder).map_err(|err| annotate(folder, err))?;
        fs::File::create_new(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|err| annotate(&path, err))?;
    }
    Ok(())
}

fn annotate(path: &Path, err: std::io::Error) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LANGUAGES: [Language; 3] = [Language::Rust, Language::Js, Language::Python];

    /// Any `{{word}}` left in a rendered file (JSDoc's `{{ a: b }}` has spaces).
    fn placeholders(text: &str) -> Vec<&str> {
        text.match_indices("{{")
            .filter_map(|(at, _)| {
                let rest = &text[at + 2..];
                let end = rest.find("}}")?;
                let word = &rest[..end];
                word.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    .then_some(word)
            })
            .collect()
    }

    #[test]
    fn every_placeholder_is_filled_with_and_without_an_sdk() {
        let sdk = Path::new("/opt/sfn-wasm-host/guest-sdk/rust");
        for language in LANGUAGES {
            for files in [
                render(language, "my-greet", None),
                render(language, "my-greet", Some(sdk)),
            ] {
                for (path, text) in &files {
                    assert_eq!(placeholders(text), Vec::<&str>::new(), "{path}");
                }
            }
        }
    }

    #[test]
    fn the_config_names_what_the_build_writes_and_parses() {
        for language in LANGUAGES {
            let files = render(language, "my-greet", None);
            let config = &files.iter().find(|(p, _)| p == "config.toml").unwrap().1;
            let parsed: toml::Value = toml::from_str(config).unwrap();
            let activity = &parsed["activity"][0];
            assert_eq!(
                activity["handler"].as_str(),
                Some(language.wasm("my-greet").as_str())
            );
            assert_eq!(
                activity["arn"].as_str(),
                Some("arn:aws:states:us-east-1:000000000000:activity:my-greet")
            );
        }
        assert_eq!(
            Language::Rust.wasm("my-greet"),
            "target/wasm32-wasip2/release/my_greet.wasm"
        );
    }

    #[test]
    fn the_state_machine_retries_exactly_the_retriable_host_failures() {
        let files = render(Language::Python, "my-greet", None);
        let text = &files
            .iter()
            .find(|(p, _)| p == "state-machine.json")
            .unwrap()
            .1;
        let machine: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(machine["StartAt"], "MyGreet");
        let state = &machine["States"]["MyGreet"];
        assert_eq!(
            state["Resource"],
            "arn:aws:states:us-east-1:000000000000:activity:my-greet"
        );
        assert_eq!(
            state["Retry"][0]["ErrorEquals"],
            serde_json::json!(HostFailure::RETRIABLE)
        );
    }

    #[test]
    fn the_sdk_dependency_is_by_version_or_by_path() {
        let find = |files: &[(String, String)], name: &str| {
            files
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, t)| t.clone())
        };
        let sdk = Path::new("/opt/guest-sdk/x");
        let cargo = find(&render(Language::Rust, "g", Some(sdk)), "Cargo.toml").unwrap();
        let parsed: toml::Value = toml::from_str(&cargo).unwrap();
        assert_eq!(
            parsed["dependencies"]["sfn-wasm-guest"].as_str(),
            Some("0.2")
        );
        assert_eq!(
            parsed["patch"]["crates-io"]["sfn-wasm-guest"]["path"].as_str(),
            Some("/opt/guest-sdk/x")
        );
        let cargo = find(&render(Language::Rust, "g", None), "Cargo.toml").unwrap();
        assert!(!cargo.contains("[patch"), "{cargo}");

        let js = render(Language::Js, "g", Some(sdk));
        let package: serde_json::Value =
            serde_json::from_str(&find(&js, "package.json").unwrap()).unwrap();
        assert_eq!(
            package["dependencies"]["sfn-wasm-guest"],
            "file:/opt/guest-sdk/x"
        );
        assert!(find(&js, ".npmrc").unwrap().contains("install-links=true"));
        let js = render(Language::Js, "g", None);
        let package: serde_json::Value =
            serde_json::from_str(&find(&js, "package.json").unwrap()).unwrap();
        assert_eq!(package["dependencies"]["sfn-wasm-guest"], "^0.2.0");
        assert_eq!(find(&js, ".npmrc"), None);

        let py = find(&render(Language::Python, "g", None), "requirements.txt").unwrap();
        assert_eq!(py.trim(), "sfn-wasm-guest==0.2.0");
        let py = find(
            &render(Language::Python, "g", Some(sdk)),
            "requirements.txt",
        )
        .unwrap();
        assert_eq!(py.trim(), "/opt/guest-sdk/x");
    }

    #[test]
    fn names_that_cannot_name_a_crate_and_a_package_are_refused() {
        for good in ["greet", "my-greet-2", "a"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "Greet", "2greet", "my_greet", "greet-", "my greet", "grüße",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
