//! The host's own folders, checked across the whole config: no activity's guest may reach
//! one (a `[[activity.dir]]` grant that is, contains or lies inside it), and those the host
//! writes and reads back are its user's alone. A check of `[host]` and every
//! `[[activity]]` together, so it is neither section's.

use std::path::{Path, PathBuf};

use super::checks::{Problem, canonical};
use super::{ActivityConfig, HostConfig};
use crate::store::StoreLocation;

/// A folder the host keeps for itself, as the config names it.
struct HostFolder {
    /// The key that names it: `host.cache_dir`, `activity[0].record`...
    key: String,
    /// What it holds, for messages.
    holds: &'static str,
    /// The folder, as configured (absolute).
    path: PathBuf,
    /// The folder with every symlink resolved.
    canonical: PathBuf,
    /// Whether the host writes it and reads back what it finds there, so that its owner
    /// and mode are checked here: not a handler's folder (the deployer's), nor the
    /// cache's (refused at start with a warning, and compiled around).
    written: bool,
}

/// Every folder the host keeps for itself: `cache_dir`, `outbox_dir`, each activity's
/// handler folder (the handler file's parent, and its real file's when it is reached
/// through a symlink), folder stores and `record` folder, and the folders of the CA files
/// it trusts (`[host.otel] ca_file`, `outbound.ca_file`: read again on every grants
/// refresh, so a guest writing there could plant a root its own TLS then trusts).
fn host_folders(host: &HostConfig, activities: &[ActivityConfig]) -> Vec<HostFolder> {
    let mut folders = Vec::new();
    let mut add = |key: String, holds, path: &Path, written| {
        folders.push(HostFolder {
            key,
            holds,
            path: path.to_owned(),
            canonical: canonical(path),
            written,
        });
    };
    if let Some(dir) = &host.cache_dir {
        add("host.cache_dir".into(), "compiled handlers", dir, false);
    }
    if let Some(outbox) = &host.outbox {
        add(
            "host.outbox_dir".into(),
            "answers waiting to be sent",
            &outbox.dir,
            true,
        );
    }
    let otel_ca_file = host.otel.as_ref().and_then(|otel| otel.ca_file.as_deref());
    if let Some(folder) = otel_ca_file.and_then(Path::parent) {
        add(
            "host.otel.ca_file".into(),
            "a CA the host trusts",
            folder,
            false,
        );
    }
    for activity in activities {
        let key = |name: &str| String::from(activity.key.key(name));
        if let Some(file) = activity.handler.file() {
            if let Some(folder) = file.parent() {
                add(key("handler"), "the handler", folder, false);
            }
            if let Ok(real) = std::fs::canonicalize(file)
                && let Some(folder) = real.parent()
                && file.parent().map(canonical).as_deref() != Some(folder)
            {
                add(key("handler"), "the handler", folder, false);
            }
        }
        let stores = [
            (
                "progress.store",
                "checkpoints",
                activity.progress.as_ref().map(|p| &p.store),
            ),
            (
                "idempotency.store",
                "stored answers",
                activity.idempotency.as_ref().map(|i| &i.store),
            ),
        ];
        for (name, holds, store) in stores {
            if let Some(StoreLocation::Folder(dir)) = store {
                add(key(name), holds, dir, true);
            }
        }
        if let Some(record) = &activity.record {
            add(key("record"), "recorded tasks", &record.dir, true);
        }
        if let Some(folder) = activity.grants.ca_file.as_deref().and_then(Path::parent) {
            add(
                key("outbound.ca_file"),
                "a CA the host trusts",
                folder,
                false,
            );
        }
    }
    folders
}

/// Checks that no guest reaches a folder of the host's: no `[[activity.dir]]` grant,
/// read-only or not, of any activity, equals, contains or lies inside one (after
/// symlinks), since a guest writing there as the host's user could plant what the host
/// trusts (compiled code, answers sent with its credentials, stored answers and
/// checkpoints, handlers) and one reading there could read other tasks' data. Then that
/// the folders the host writes and reads back, when they exist, are its user's and
/// writable by nobody else. On error, the full key (`activity[0].dir[1]`,
/// `host.outbox_dir`) and the message.
pub(super) fn check_host_folders(
    host: &HostConfig,
    activities: &[ActivityConfig],
) -> Result<(), Problem> {
    let folders = host_folders(host, activities);
    let resolved = |path: &Path, canonical: &Path| {
        if path == canonical {
            path.display().to_string()
        } else {
            format!("{} (resolved: {})", path.display(), canonical.display())
        }
    };
    for activity in activities {
        for (number, grant) in activity.grants.dirs.iter().enumerate() {
            let granted = canonical(&grant.host);
            for folder in &folders {
                let relation = if granted == folder.canonical {
                    "is"
                } else if granted.starts_with(&folder.canonical) {
                    "lies inside"
                } else if folder.canonical.starts_with(&granted) {
                    "contains"
                } else {
                    continue;
                };
                let what = if folder.key.ends_with(".handler") || folder.key.ends_with(".ca_file") {
                    format!("the folder of `{}`", folder.key)
                } else {
                    format!("`{}`", folder.key)
                };
                return Err((
                    activity.key.item("dir", number).into(),
                    format!(
                        "{} {relation} {what}, {}, a folder the host keeps for itself ({}): no guest may reach it, not even read-only; grant a folder that neither contains nor lies inside it",
                        resolved(&grant.host, &granted),
                        resolved(&folder.path, &folder.canonical),
                        folder.holds,
                    ),
                ));
            }
        }
    }
    for folder in folders.iter().filter(|f| f.written && f.path.is_dir()) {
        sfn_wasm_engine::host_folder::check_owned(&folder.path)
            .map_err(|message| (folder.key.clone(), message))?;
    }
    Ok(())
}
