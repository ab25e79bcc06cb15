//! `sfn-wasm-host new rust|js|python NAME [--dir DIR] [--sdk PATH | --registry]`: writes a
//! standalone handler project from the templates embedded in the binary
//! (`host/templates/`), so that a handler's first build works from an empty folder with
//! nothing of this repository.
//!
//! Every project holds the greet handler (typed), a test of its logic that runs without
//! the host, `input.json`, a `config.toml` for `serve`, a one-state `state-machine.json`
//! retrying the host's retriable failures, a README and a `.gitignore`. Its SDK is, by
//! default, the copy of `guest-sdk/` this binary carries, written into the project's
//! `vendor/sfn-wasm-guest/` (the SDKs are not on crates.io, npm or PyPI yet, and a project
//! must build as generated); `--sdk` depends on a checkout's SDK by path instead, and
//! `--registry` on the published version.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sfn_wasm_host::outcome::FailureKind;

use super::EXIT_USAGE;

mod sdk;

use sdk::{VENDORED, vendored_sdk};

/// A template of `host/templates/`, embedded in the binary.
macro_rules! t {
    ($path:literal) => {
        include_str!(concat!("../../../templates/", $path))
    };
}

/// The SDK version the projects depend on with `--registry`; the version of the copy this
/// binary carries.
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
    /// A checkout's `guest-sdk` folder: the project depends on the SDK there by path
    /// (for work on the SDK itself). Default: a copy of the SDK this binary carries, in
    /// the project's `vendor/sfn-wasm-guest/`.
    #[arg(long, value_name = "PATH", conflicts_with = "registry")]
    sdk: Option<PathBuf>,
    /// Depend on the SDK published on crates.io, npm or PyPI (`sfn-wasm-guest`
    /// 0.2.0) instead of a copy in the project.
    #[arg(long)]
    registry: bool,
    /// Serve the handler as a callback task (`.waitForTaskToken` through an SQS queue):
    /// `config.toml` has a `[[callback]]`, `state-machine.json` sends the task to the
    /// queue. Default: an activity.
    #[arg(long)]
    callback: bool,
    /// Write a handler that calls AWS with the AWS SDK for JavaScript v3 (JavaScript
    /// only): it reads an S3 object and sends an SQS message, and `config.toml` grants
    /// the activity S3 and SQS (`[activity.aws]`), signed by the host.
    #[arg(long)]
    aws: bool,
}

/// Where a project's SDK comes from.
#[derive(Debug, Clone, Copy)]
enum Sdk<'a> {
    /// The copy this binary carries, written into the project's `vendor/sfn-wasm-guest/`.
    Vendored,
    /// A checkout's SDK folder for the language, by absolute path.
    Path(&'a Path),
    /// The published version, [`SDK_VERSION`].
    Registry,
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

    /// The registry the SDK is published on, for messages.
    fn registry(self) -> &'static str {
        match self {
            Language::Rust => "crates.io",
            Language::Js => "npm",
            Language::Python => "PyPI",
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

/// The JavaScript files of an `--aws` project, in place of [`Language::templates`]'.
const JS_AWS: [(&str, &str); 5] = [
    ("package.json", t!("js-aws/package.json")),
    ("src/handler.js", t!("js-aws/src/handler.js")),
    ("test/handler.test.js", t!("js-aws/test/handler.test.js")),
    ("README.md", t!("js-aws/README.md")),
    (".gitignore", t!("js/gitignore")),
];

/// The files every project has, whatever its language, for an activity.
const COMMON: [(&str, &str); 3] = [
    ("input.json", t!("common/input.json")),
    ("config.toml", t!("common/config.toml")),
    ("state-machine.json", t!("common/state-machine.json")),
];

/// The files every project has, whatever its language, for a callback (`--callback`).
const COMMON_CALLBACK: [(&str, &str); 3] = [
    ("input.json", t!("common/input.json")),
    ("config.toml", t!("common/callback-config.toml")),
    (
        "state-machine.json",
        t!("common/callback-state-machine.json"),
    ),
];

/// Writes the project. Exits 0 when written, 2 for a bad name, a non-empty folder or a
/// `--sdk` that is not the guest-sdk folder, 1 when a file could not be written.
pub fn run(args: NewArgs) -> ExitCode {
    if let Err(problem) = check_name(&args.name) {
        eprintln!("error: NAME {:?}: {problem}", args.name);
        return ExitCode::from(EXIT_USAGE);
    }
    let folder = match args.sdk.as_deref().map(|p| sdk_folder(p, args.language)) {
        None => None,
        Some(Ok(folder)) => Some(folder),
        Some(Err(problem)) => {
            eprintln!("error: --sdk {problem}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sdk = match (&folder, args.registry) {
        (Some(folder), _) => Sdk::Path(folder),
        (None, true) => Sdk::Registry,
        (None, false) => Sdk::Vendored,
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
    if args.aws && args.language != Language::Js {
        eprintln!(
            "error: --aws writes a JavaScript handler on the AWS SDK for JavaScript; for Rust, see examples/aws (sfn_wasm_guest::aws::sdk_config)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let files = render(args.language, &args.name, sdk, args.callback, args.aws);
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
    let vendored = files
        .iter()
        .filter(|(path, _)| path.starts_with(VENDORED))
        .count();
    for (path, _) in files.iter().filter(|(path, _)| !path.starts_with(VENDORED)) {
        println!("  {path}");
    }
    if vendored > 0 {
        println!("  {VENDORED}/ ({vendored} files: the SDK)");
        eprintln!(
            "warning: sfn-wasm-guest {SDK_VERSION} is not on {} yet: the project depends on \
             the copy of it this sfn-wasm-host carries, in {VENDORED}/ (once it is \
             published, `sfn-wasm-host new --registry` depends on the published one)",
            args.language.registry()
        );
    }
    println!("next:\n  cd {}", dir.display());
    for step in args.language.next_steps() {
        println!("  {step}");
    }
    println!(
        "  sfn-wasm-host invoke {} --input-file input.json{}",
        args.language.wasm(&args.name),
        if args.aws {
            " --aws-region us-east-1 --aws-service s3 --aws-service sqs"
        } else {
            ""
        }
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

/// The project's files (for a callback when `callback`) with their placeholders filled: `{{name}}`, `{{wasm}}` (what the
/// build writes), `{{state}}`, `{{retriable}}`, and the SDK dependency (`{{patch}}`,
/// `{{sdk}}`); with [`Sdk::Vendored`], the SDK's own files under [`VENDORED`].
fn render(
    language: Language,
    name: &str,
    sdk: Sdk,
    callback: bool,
    aws: bool,
) -> Vec<(String, String)> {
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
    let retriable = serde_json::to_string(&FailureKind::retriable_names()).unwrap_or_default();
    let sdk_path = match sdk {
        Sdk::Vendored => Some(VENDORED.to_owned()),
        Sdk::Path(path) => Some(path.to_string_lossy().into_owned()),
        Sdk::Registry => None,
    };
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
        // pip reads a relative path in requirements.txt from where it runs: the project.
        (Language::Python, Some(path)) if matches!(sdk, Sdk::Vendored) => {
            (String::new(), format!("./{path}"))
        }
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
    let own: &[(&str, &str)] = if aws { &JS_AWS } else { language.templates() };
    let mut files: Vec<(String, String)> = own
        .iter()
        .chain(if callback { &COMMON_CALLBACK } else { &COMMON })
        .map(|(path, template)| ((*path).to_owned(), fill(template)))
        .collect();
    if aws {
        // The handler's input names an object and a queue; the config grants both services.
        let table = if callback { "callback" } else { "activity" };
        for (path, text) in &mut files {
            match path.as_str() {
                "input.json" => *text = t!("common/aws-input.json").to_owned(),
                "config.toml" => text.push_str(&format!(
                    "# AWS the handler calls, signed by the host with its own credentials (the\n\
                     # default chain; or `role_arn = \"...\"`): any other request is refused.\n\
                     [{table}.aws]\nservices = [\"s3\", \"sqs\"]\nregions = [\"us-east-1\"]\n"
                )),
                _ => {}
            }
        }
    }
    if language == Language::Js && matches!(sdk, Sdk::Path(_)) {
        // npm links a `file:` dependency outside the project without installing its own
        // dependencies; installing it as a packed copy gives it them, as the published
        // package would. (One inside the project, `vendor/`, gets them as it is.)
        files.push((
            ".npmrc".to_owned(),
            "# sfn-wasm-guest comes from a local folder (package.json): install it as a copy,\n\
             # with its own dependencies, as the published package would be.\n\
             install-links=true\n"
                .to_owned(),
        ));
    }
    if matches!(sdk, Sdk::Vendored) {
        files.extend(vendored_sdk(language));
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
                render(language, "my-greet", Sdk::Vendored, false, false),
                render(language, "my-greet", Sdk::Path(sdk), false, false),
                render(language, "my-greet", Sdk::Registry, false, false),
                render(language, "my-greet", Sdk::Vendored, true, false),
                render(Language::Js, "my-greet", Sdk::Vendored, false, true),
                render(Language::Js, "my-greet", Sdk::Registry, true, true),
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
            let files = render(language, "my-greet", Sdk::Vendored, false, false);
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
    fn an_aws_project_grants_s3_and_sqs_to_the_handler_it_writes() {
        for callback in [false, true] {
            let files = render(Language::Js, "my-greet", Sdk::Vendored, callback, true);
            let file = |name: &str| &files.iter().find(|(p, _)| p == name).unwrap().1;
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(Language::Js.wasm("my-greet")), b"").unwrap();
            let config = sfn_wasm_host::config::Config::parse(
                &dir.path().join("config.toml"),
                file("config.toml"),
            )
            .unwrap();
            let aws = config.activities[0].grants.aws.as_ref().unwrap();
            assert_eq!(aws.services, ["s3", "sqs"]);
            assert!(file("src/handler.js").contains("from '@aws-sdk/client-s3'"));
            assert!(file("package.json").contains("\"@aws-sdk/client-sqs\""));
            let input: serde_json::Value = serde_json::from_str(file("input.json")).unwrap();
            assert!(input["bucket"].is_string() && input["queue_url"].is_string());
        }
    }

    #[test]
    fn the_state_machine_retries_exactly_the_retriable_host_failures() {
        let files = render(Language::Python, "my-greet", Sdk::Vendored, false, false);
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
            serde_json::json!(FailureKind::retriable_names())
        );
    }

    #[test]
    fn a_callback_project_serves_its_queue_and_its_state_machine_sends_to_it() {
        for language in LANGUAGES {
            let files = render(language, "my-greet", Sdk::Vendored, true, false);
            let file = |name: &str| &files.iter().find(|(p, _)| p == name).unwrap().1;
            // Checked as `serve` checks it, beside what the build writes.
            let dir = tempfile::tempdir().unwrap();
            let wasm = dir.path().join(language.wasm("my-greet"));
            fs::create_dir_all(wasm.parent().unwrap()).unwrap();
            fs::write(&wasm, b"").unwrap();
            let config = sfn_wasm_host::config::Config::parse(
                &dir.path().join("config.toml"),
                file("config.toml"),
            )
            .unwrap();
            let queue = config.activities[0].source.callback().unwrap();
            assert_eq!(
                queue.queue_url,
                "https://sqs.us-east-1.amazonaws.com/000000000000/my-greet-tasks"
            );
            let machine: serde_json::Value =
                serde_json::from_str(file("state-machine.json")).unwrap();
            let state = &machine["States"]["MyGreet"];
            assert_eq!(
                state["Resource"],
                "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
            );
            assert_eq!(state["Parameters"]["QueueUrl"], queue.queue_url.as_str());
            // What the config's pointers read is what the state puts in the message.
            let body = &state["Parameters"]["MessageBody"];
            assert_eq!(body["TaskToken.$"], "$$.Task.Token");
            assert_eq!(queue.token, "/TaskToken");
            assert_eq!(body["input.$"], "$");
            assert_eq!(queue.input.as_deref(), Some("/input"));
            assert_eq!(
                state["Retry"][0]["ErrorEquals"],
                serde_json::json!(FailureKind::retriable_names())
            );
        }
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
        let cargo = find(
            &render(Language::Rust, "g", Sdk::Path(sdk), false, false),
            "Cargo.toml",
        )
        .unwrap();
        let parsed: toml::Value = toml::from_str(&cargo).unwrap();
        assert_eq!(
            parsed["dependencies"]["sfn-wasm-guest"].as_str(),
            Some("0.2")
        );
        assert_eq!(
            parsed["patch"]["crates-io"]["sfn-wasm-guest"]["path"].as_str(),
            Some("/opt/guest-sdk/x")
        );
        let cargo = find(
            &render(Language::Rust, "g", Sdk::Registry, false, false),
            "Cargo.toml",
        )
        .unwrap();
        assert!(!cargo.contains("[patch"), "{cargo}");

        let js = render(Language::Js, "g", Sdk::Path(sdk), false, false);
        let package: serde_json::Value =
            serde_json::from_str(&find(&js, "package.json").unwrap()).unwrap();
        assert_eq!(
            package["dependencies"]["sfn-wasm-guest"],
            "file:/opt/guest-sdk/x"
        );
        assert!(find(&js, ".npmrc").unwrap().contains("install-links=true"));
        let js = render(Language::Js, "g", Sdk::Registry, false, false);
        let package: serde_json::Value =
            serde_json::from_str(&find(&js, "package.json").unwrap()).unwrap();
        assert_eq!(package["dependencies"]["sfn-wasm-guest"], "^0.2.0");
        assert_eq!(find(&js, ".npmrc"), None);

        let py = find(
            &render(Language::Python, "g", Sdk::Registry, false, false),
            "requirements.txt",
        )
        .unwrap();
        assert_eq!(py.trim(), "sfn-wasm-guest==0.2.0");
        let py = find(
            &render(Language::Python, "g", Sdk::Path(sdk), false, false),
            "requirements.txt",
        )
        .unwrap();
        assert_eq!(py.trim(), "/opt/guest-sdk/x");
    }

    #[test]
    fn by_default_the_project_depends_on_the_copy_of_the_sdk_it_holds() {
        let find = |files: &[(String, String)], name: &str| {
            files
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, t)| t.clone())
        };
        let rust = render(Language::Rust, "g", Sdk::Vendored, false, false);
        let cargo: toml::Value = toml::from_str(&find(&rust, "Cargo.toml").unwrap()).unwrap();
        assert_eq!(
            cargo["patch"]["crates-io"]["sfn-wasm-guest"]["path"].as_str(),
            Some("vendor/sfn-wasm-guest")
        );
        let js = render(Language::Js, "g", Sdk::Vendored, false, false);
        let package: serde_json::Value =
            serde_json::from_str(&find(&js, "package.json").unwrap()).unwrap();
        assert_eq!(
            package["dependencies"]["sfn-wasm-guest"],
            "file:vendor/sfn-wasm-guest"
        );
        // Inside the project, npm installs the folder's own dependencies as it is.
        assert_eq!(find(&js, ".npmrc"), None);
        let sdk_package: serde_json::Value =
            serde_json::from_str(&find(&js, "vendor/sfn-wasm-guest/package.json").unwrap())
                .unwrap();
        assert_eq!(sdk_package["version"], SDK_VERSION);
        let py = render(Language::Python, "g", Sdk::Vendored, false, false);
        assert_eq!(
            find(&py, "requirements.txt").unwrap().trim(),
            "./vendor/sfn-wasm-guest"
        );
        assert!(find(&py, "vendor/sfn-wasm-guest/sfn_wasm_guest/http.py").is_some());
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
