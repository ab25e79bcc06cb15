//! A guest never gets a folder the host keeps for itself: its caches, outbox, handler
//! folders, stores, records and trusted CA files, whatever path leads there.

use std::path::Path;

use super::{ARN, Config};

/// A folder the host keeps for itself, for [`host_folders_are_never_granted`]: the
/// config lines that name `folder`, and the key the error names.
struct Kept {
    name: &'static str,
    key: &'static str,
}

const KEPT: [Kept; 6] = [
    Kept {
        name: "cache",
        key: "`host.cache_dir`",
    },
    Kept {
        name: "outbox",
        key: "`host.outbox_dir`",
    },
    Kept {
        name: "handler",
        key: "the folder of `activity[0].handler`",
    },
    Kept {
        name: "progress",
        key: "`activity[0].progress.store`",
    },
    Kept {
        name: "idempotency",
        key: "`activity[0].idempotency.store`",
    },
    Kept {
        name: "record",
        key: "`activity[0].record`",
    },
];

/// A config naming every kind of host folder as `root/KIND/f`, with `grants` after the
/// activity's keys.
fn config_with_host_folders(root: &Path, activity_tail: &str) -> String {
    let f = |name: &str| root.join(name).join("f").display().to_string();
    format!(
        "[host]\ncache_dir = \"{}\"\noutbox_dir = \"{}\"\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"{}/greet.wasm\"\nrecord = \"{}\"\n\
         [activity.progress]\nkey = \"/id\"\nstore = \"{}\"\n\
         [activity.idempotency]\nkey = \"/id\"\nstore = \"{}\"\n{activity_tail}",
        f("cache"),
        f("outbox"),
        f("handler"),
        f("record"),
        f("progress"),
        f("idempotency"),
    )
}

/// `root/KIND/f/sub` for each kind, with the handler in `root/handler/f`.
fn host_folders_in(root: &Path) {
    for kept in &KEPT {
        std::fs::create_dir_all(root.join(kept.name).join("f/sub")).unwrap();
    }
    std::fs::write(root.join("handler/f/greet.wasm"), b"\0asm").unwrap();
    std::fs::create_dir(root.join("data")).unwrap();
}

fn grant(host: &Path, writable: bool) -> String {
    format!(
        "[[activity.dir]]\nhost = \"{}\"\nguest = \"/data\"\nwritable = {writable}\n",
        host.display()
    )
}

#[test]
fn host_folders_are_never_granted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");
    // A folder of its own is granted, read-only or writable.
    for writable in [false, true] {
        let text = config_with_host_folders(root, &grant(&root.join("data"), writable));
        Config::parse(&file, &text).unwrap();
    }
    for kept in &KEPT {
        let folder = root.join(kept.name).join("f");
        for (granted, relation) in [
            (folder.clone(), "is"),
            (folder.join("sub"), "lies inside"),
            (root.join(kept.name), "contains"),
        ] {
            for writable in [true, false] {
                let text = config_with_host_folders(root, &grant(&granted, writable));
                let err = Config::parse(&file, &text).expect_err(&format!(
                    "a grant of {} was accepted ({})",
                    granted.display(),
                    kept.name
                ));
                assert_eq!(err.key, "activity[0].dir[0]", "{err}");
                let expected = format!(
                    "{} {relation} {}, {}, a folder the host keeps for itself",
                    granted.display(),
                    kept.key,
                    folder.display()
                );
                assert!(err.message.starts_with(&expected), "{expected:?} in {err}");
                assert!(
                    err.message
                        .ends_with("grant a folder that neither contains nor lies inside it"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn host_folders_are_compared_after_symlinks_and_before_they_exist() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");

    // A symlink to the cache folder.
    let link = root.join("innocent");
    std::os::unix::fs::symlink(root.join("cache/f"), &link).unwrap();
    let err =
        Config::parse(&file, &config_with_host_folders(root, &grant(&link, true))).unwrap_err();
    assert_eq!(err.key, "activity[0].dir[0]");
    assert!(
        err.message.contains("(resolved: ") && err.message.contains("is `host.cache_dir`"),
        "{err}"
    );

    // An outbox that does not exist yet, under a granted folder.
    let text = config_with_host_folders(root, &grant(&root.join("data"), true)).replace(
        &root.join("outbox/f").display().to_string(),
        &root.join("data/later/outbox").display().to_string(),
    );
    let err = Config::parse(&file, &text).unwrap_err();
    assert_eq!(err.key, "activity[0].dir[0]");
    assert!(err.message.contains("contains `host.outbox_dir`"), "{err}");
    // ... reached through `..`.
    let text = config_with_host_folders(root, &grant(&root.join("data"), true)).replace(
        &root.join("outbox/f").display().to_string(),
        &root
            .join("cache/missing/../../data/x")
            .display()
            .to_string(),
    );
    let err = Config::parse(&file, &text).unwrap_err();
    assert!(err.message.contains("contains `host.outbox_dir`"), "{err}");

    // The handler's real folder, when it is reached through a symlink.
    std::fs::create_dir(root.join("releases")).unwrap();
    std::fs::rename(
        root.join("handler/f/greet.wasm"),
        root.join("releases/greet.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        root.join("releases/greet.wasm"),
        root.join("handler/f/greet.wasm"),
    )
    .unwrap();
    let err = Config::parse(
        &file,
        &config_with_host_folders(root, &grant(&root.join("releases"), false)),
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("is the folder of `activity[0].handler`"),
        "{err}"
    );
}

#[test]
fn another_activitys_folders_are_never_granted_either() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let other = ARN.replace(":greet", ":other");
    let text = format!(
        "{}\n[[activity]]\narn = \"{other}\"\nhandler = \"{}\"\n{}",
        config_with_host_folders(root, ""),
        root.join("handler/f/greet.wasm").display(),
        grant(&root.join("progress"), true),
    );
    let err = Config::parse(&root.join("config.toml"), &text).unwrap_err();
    assert_eq!(err.key, "activity[1].dir[0]");
    assert!(
        err.message
            .contains("contains `activity[0].progress.store`"),
        "{err}"
    );
}

#[test]
fn a_host_folder_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");
    let text = config_with_host_folders(root, "");
    Config::parse(&file, &text).unwrap();
    for (folder, key) in [
        ("outbox/f", "host.outbox_dir"),
        ("progress/f", "activity[0].progress.store"),
        ("idempotency/f", "activity[0].idempotency.store"),
        ("record/f", "activity[0].record"),
    ] {
        let path = root.join(folder);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Config::parse(&file, &text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert_eq!(
            err.message,
            format!(
                "refusing {}: others can write to it (mode 777); run `chmod go-w {}` or use another folder",
                path.display(),
                path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// The folders of the CA files the host trusts are host folders too: a guest writing
/// there could plant a root its own TLS (and its signed AWS requests') then trusts, at the
/// next grants refresh.
#[test]
fn a_grant_over_a_trusted_ca_files_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("certs")).unwrap();
    std::fs::create_dir_all(root.join("handlers")).unwrap();
    std::fs::write(root.join("handlers/greet.wasm"), b"\0asm").unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem"),
        root.join("certs/ca.pem"),
    )
    .unwrap();
    let file = root.join("config.toml");
    for (table, key) in [
        ("[activity.outbound]", "`activity[0].outbound.ca_file`"),
        (
            "[host.otel]\nendpoint = \"https://127.0.0.1:4318\"",
            "`host.otel.ca_file`",
        ),
    ] {
        let (host, activity) = if table.starts_with("[host") {
            (
                format!("{table}\nca_file = \"certs/ca.pem\"\n"),
                String::new(),
            )
        } else {
            (
                String::new(),
                format!("{table}\nca_file = \"certs/ca.pem\"\n"),
            )
        };
        let text = format!(
            "{host}[[activity]]\narn = \"{ARN}\"\nhandler = \"handlers/greet.wasm\"\n{activity}{}",
            grant(&root.join("certs"), false)
        );
        let err = Config::parse(&file, &text).expect_err(key);
        assert_eq!(err.key, "activity[0].dir[0]", "{err}");
        assert!(
            err.message.contains(&format!("the folder of {key}")),
            "{key}: {err}"
        );
    }
}
