//! The SDKs the binary carries (`guest-sdk/`, embedded file by file), written into a
//! project's `vendor/sfn-wasm-guest/` by `new` while they are not published.

use super::{Language, SDK_VERSION};

/// Where a project's SDK is written, relative to the project (the default, [`Sdk::Vendored`]).
pub(super) const VENDORED: &str = "vendor/sfn-wasm-guest";

/// One file of an SDK this binary carries: (path in the SDK's folder, text).
type SdkFile = (&'static str, &'static str);

/// The files of `guest-sdk/LANGUAGE` a project's copy needs (its tests stay behind); a
/// unit test checks the list against the folder, so a new SDK file cannot be forgotten.
macro_rules! sdk_files {
    ($language:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../../guest-sdk/", $language, "/", $path)))),*]
    };
}

const JS_SDK: &[SdkFile] = sdk_files!("js":
    "README.md", "package.json", "index.d.ts", "http.d.ts", "aws.d.ts", "bin/sfn-wasm-guest.js",
    "src/core.js", "src/index.js", "src/component.js", "src/http-shared.js",
    "src/http-component.js", "src/http-node.js", "src/aws-shared.js", "src/aws-component.js",
    "src/aws-node.js", "types/handler.d.ts",
    "types/interfaces/sfn-activity-toolkit.d.ts", "types/interfaces/sfn-activity-types.d.ts",
    "wit/handler.wit", "wit-http/http-client.wit", "wit-http/deps/cli.wit",
    "wit-http/deps/clocks.wit", "wit-http/deps/filesystem.wit", "wit-http/deps/http.wit",
    "wit-http/deps/io.wit", "wit-http/deps/random.wit", "wit-http/deps/sockets.wit",
    "wit-http/deps/sfn-activity/handler.wit",
);

const PYTHON_SDK: &[SdkFile] = sdk_files!("python":
    "README.md", "pyproject.toml", "sfn_wasm_guest/__init__.py", "sfn_wasm_guest/__main__.py",
    "sfn_wasm_guest/_component.py", "sfn_wasm_guest/http.py", "sfn_wasm_guest/_http_wasi.py",
    "sfn_wasm_guest/aws.py",
    "sfn_wasm_guest/_http_local.py", "sfn_wasm_guest/py.typed",
    "sfn_wasm_guest/wit/handler.wit", "sfn_wasm_guest/wit-http/http-client.wit",
    "sfn_wasm_guest/wit-http/deps/cli.wit", "sfn_wasm_guest/wit-http/deps/clocks.wit",
    "sfn_wasm_guest/wit-http/deps/filesystem.wit", "sfn_wasm_guest/wit-http/deps/http.wit",
    "sfn_wasm_guest/wit-http/deps/io.wit", "sfn_wasm_guest/wit-http/deps/random.wit",
    "sfn_wasm_guest/wit-http/deps/sockets.wit",
    "sfn_wasm_guest/wit-http/deps/sfn-activity/handler.wit",
);

/// The Rust SDK's files but its `Cargo.toml`, which inherits from the workspace and is
/// written whole by [`rust_manifest`].
const RUST_SDK: &[SdkFile] = sdk_files!("rust":
    "README.md", "build.rs", "src/lib.rs", "src/http.rs", "src/aws.rs", "wit/handler.wit",
);

/// The Rust SDK's manifest and the workspace's, whose `package` and `dependencies`
/// entries it inherits.
const RUST_MANIFEST: &str = include_str!("../../../../guest-sdk/rust/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../../Cargo.toml");

/// The SDK this binary carries, as files of the project under [`VENDORED`].
pub(super) fn vendored_sdk(language: Language) -> Vec<(String, String)> {
    let (files, manifest) = match language {
        Language::Js => (JS_SDK, None),
        Language::Python => (PYTHON_SDK, None),
        Language::Rust => (RUST_SDK, Some(rust_manifest())),
    };
    files
        .iter()
        .map(|(path, text)| (format!("{VENDORED}/{path}"), (*text).to_owned()))
        .chain(manifest.map(|text| (format!("{VENDORED}/Cargo.toml"), text)))
        .collect()
}

/// The Rust SDK's manifest with what it inherits from this workspace written out (a
/// crate outside the workspace has nothing to inherit from), as `cargo package` would.
fn rust_manifest() -> String {
    let mut manifest: toml::Table = toml::from_str(RUST_MANIFEST).unwrap_or_default();
    let workspace: toml::Table = toml::from_str(WORKSPACE_MANIFEST).unwrap_or_default();
    let inherited = |section: &str| -> toml::Table {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let is_inherited =
        |value: &toml::Value| value.get("workspace").and_then(toml::Value::as_bool) == Some(true);
    let package_fields = inherited("package");
    if let Some(package) = manifest.get_mut("package").and_then(|p| p.as_table_mut()) {
        for (key, value) in package.iter_mut() {
            if is_inherited(value)
                && let Some(from) = package_fields.get(key)
            {
                *value = from.clone();
            }
        }
        package.remove("publish");
    }
    let dependencies = inherited("dependencies");
    if let Some(table) = manifest
        .get_mut("dependencies")
        .and_then(|d| d.as_table_mut())
    {
        for (name, value) in table.iter_mut() {
            if !is_inherited(value) {
                continue;
            }
            // The workspace's entry (a version string or a table), with what the crate
            // adds (`features`, `optional`).
            let mut entry = match dependencies.get(name) {
                Some(toml::Value::String(version)) => {
                    toml::Table::from_iter([("version".to_owned(), version.clone().into())])
                }
                Some(toml::Value::Table(table)) => table.clone(),
                _ => toml::Table::new(),
            };
            if let Some(own) = value.as_table() {
                for (key, v) in own.iter().filter(|(key, _)| *key != "workspace") {
                    // Features add to the workspace's, as Cargo adds them.
                    match (entry.get_mut(key), v) {
                        (Some(toml::Value::Array(have)), toml::Value::Array(more)) => {
                            have.extend(more.iter().cloned())
                        }
                        _ => {
                            entry.insert(key.clone(), v.clone());
                        }
                    }
                }
            }
            *value = toml::Value::Table(entry);
        }
    }
    format!(
        "# sfn-wasm-guest {SDK_VERSION}, as `sfn-wasm-host new` wrote it from the copy it carries.\n\n{}",
        toml::to_string(&manifest).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    /// The files of `guest-sdk/LANGUAGE` but its tests and build output, relative to it.
    fn sdk_folder_files(language: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../guest-sdk")
            .join(language);
        let mut found = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                // Tests, and what building, packing or installing leaves in a checkout.
                let skipped = [
                    "test",
                    "tests",
                    "node_modules",
                    "__pycache__",
                    "build",
                    "dist",
                    "target",
                    "package-lock.json",
                ];
                if skipped.contains(&name.as_str())
                    || [".egg-info", ".tgz", ".whl", ".tar.gz"]
                        .iter()
                        .any(|end| name.ends_with(end))
                {
                    continue;
                }
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn the_binary_carries_every_file_of_each_sdk() {
        for (language, carried) in [("js", JS_SDK), ("python", PYTHON_SDK), ("rust", RUST_SDK)] {
            let mut carried: Vec<String> =
                carried.iter().map(|(path, _)| (*path).to_owned()).collect();
            if language == "rust" {
                carried.push("Cargo.toml".to_owned());
            }
            carried.sort();
            assert_eq!(
                carried,
                sdk_folder_files(language),
                "guest-sdk/{language}: list its files in new.rs"
            );
        }
    }

    #[test]
    fn the_rust_sdks_manifest_inherits_nothing() {
        let text = rust_manifest();
        assert!(!text.contains("workspace"), "{text}");
        let manifest: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("sfn-wasm-guest"));
        assert_eq!(manifest["package"]["version"].as_str(), Some(SDK_VERSION));
        assert_eq!(manifest["package"]["edition"].as_str(), Some("2024"));
        assert!(manifest["package"].get("publish").is_none());
        let serde = &manifest["dependencies"]["serde"];
        assert_eq!(serde["version"].as_str(), Some("1"));
        assert_eq!(serde["features"][0].as_str(), Some("derive"));
        assert!(manifest["dependencies"]["wit-bindgen"]["version"].is_str());
        // Its own entries and features stay as they are.
        assert_eq!(
            manifest["dependencies"]["http"]["optional"].as_bool(),
            Some(true)
        );
        assert!(manifest["features"]["aws"].is_array());
    }
}
