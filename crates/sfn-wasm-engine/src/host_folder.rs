//! A folder only this host's user may change ([`check_owned`]), and what it keeps there
//! sealed: the compile cache and the outbox trust what they read back only when its HMAC
//! verifies under the folder's own key (`.key`, 0600, [`host_key`]); the folder stores
//! share the ownership check and the clean-up of a crashed write's temporaries.
//!
//! Here, below every user of it, so that the engine's compile cache and the host's
//! outbox and stores share one implementation of the checks.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use ring::hmac;
use ring::rand::SecureRandom as _;

/// The file a host folder keeps its MAC key in (see [`host_key`]).
pub const KEY_FILE: &str = ".key";
/// The size of a MAC ([`seal`]).
pub const MAC_BYTES: usize = 32;

/// Checks that the existing folder `dir` may hold what the host trusts: a folder
/// (symlinks followed) owned by the user running the host, that neither group nor
/// others can write to (anyone who can could plant what the host reads back).
///
/// # Errors
/// What is wrong and what to do, naming the folder.
pub fn check_owned(dir: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(dir).map_err(|err| format!("cannot inspect {}: {err}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "refusing {}: it is owned by uid {}, not by the user running the host (uid {me}); use a folder of your own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing {}: others can write to it (mode {:o}); run `chmod go-w {}` or use another folder",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        ));
    }
    Ok(())
}

/// The HMAC-SHA256 key of the host folder `dir`: 32 bytes from the OS's CSPRNG in
/// `dir/.key` (mode 0600), made once and read again at every start. Never read
/// through a symlink; refused when another user owns it or anyone else may read or
/// write it.
///
/// # Errors
/// What is wrong and what to do, naming the file.
pub fn host_key(dir: &Path) -> Result<hmac::Key, String> {
    let path = dir.join(KEY_FILE);
    // Twice: a host starting at the same time may make the key between our read and
    // our write; then its key is the one.
    for _ in 0..2 {
        if let Some(bytes) = read_key(&path)? {
            return Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
        }
        let mut bytes = [0u8; KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the OS gave no random bytes for the host's key".to_owned())?;
        let cannot = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
        // tempfile makes its files 0600.
        let mut temp = tempfile::Builder::new()
            .prefix(".key.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(cannot)?;
        temp.write_all(&bytes).map_err(cannot)?;
        temp.as_file().sync_all().map_err(cannot)?;
        match temp.persist_noclobber(&path) {
            Ok(_) => {
                sync_dir(dir).map_err(cannot)?;
                return Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
            }
            Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(cannot(err.error)),
        }
    }
    Err(format!("cannot make {}: it keeps changing", path.display()))
}

/// The HMAC-SHA256 under `key` of `parts`, each length-prefixed (so no two lists of
/// parts share a MAC).
pub fn seal(key: &hmac::Key, parts: &[&[u8]]) -> [u8; MAC_BYTES] {
    let mut context = hmac::Context::with_key(key);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut mac = [0u8; MAC_BYTES];
    mac.copy_from_slice(context.sign().as_ref());
    mac
}

/// Whether `mac` is [`seal`] of `parts` under `key`, compared in
/// constant time.
pub fn is_sealed(key: &hmac::Key, parts: &[&[u8]], mac: &[u8]) -> bool {
    let expected = seal(key, parts);
    mac.len() == MAC_BYTES
        && expected
            .iter()
            .zip(mac)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The size of a host folder's key.
const KEY_BYTES: usize = 32;

/// How old a temporary file must be before a start removes it: no write of the host's
/// takes this long, so one this old was left by a process that died mid-write (and one
/// younger may be another process's write in progress).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temporary files a process that died mid-write left in `dir` (the
/// host's `.NAME.tmp`, `.NAME.PID.N.tmp`, and tempfile's `.tmpXXXXXX`), older than ten
/// minutes: without it, each crash would leave its bytes in the folder for good.
/// Returns how many it removed; what it cannot read or remove is left.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let temporary =
            name.starts_with('.') && (name.ends_with(".tmp") || name.starts_with(".tmp"));
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= STALE_TEMPORARY);
        if temporary && stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            folder = %dir.display(),
            removed,
            "removed temporary files a stopped process left"
        );
    }
    removed
}

/// The key at `path`; `None` when there is none.
fn read_key(path: &Path) -> Result<Option<[u8; KEY_BYTES]>, String> {
    use rustix::fs::{Mode, OFlags};
    let refuse = |reason: String| format!("refusing the key file {}: {reason}", path.display());
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(refuse(
                "it is a symlink; delete it, and the host makes a new key".into(),
            ));
        }
        Err(err) => return Err(refuse(std::io::Error::from(err).to_string())),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|err| refuse(err.to_string()))?;
    let me = rustix::process::geteuid().as_raw();
    let renew =
        "delete it, and the host makes a new one (what it sealed with the old one is then refused)";
    if !meta.is_file() {
        return Err(refuse(format!("it is not a file; {renew}")));
    }
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not by the user running the host (uid {me}); {renew}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "others may read or change it (mode {:o}); {renew}",
            meta.mode() & 0o777
        )));
    }
    let mut bytes = Vec::with_capacity(KEY_BYTES + 1);
    std::io::Read::by_ref(&mut file)
        .take(KEY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(err.to_string()))?;
    let key: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| refuse(format!("it does not hold a {KEY_BYTES}-byte key; {renew}")))?;
    Ok(Some(key))
}

/// Makes a rename or a new name in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_seals_what_it_was_given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = host_key(dir.path()).unwrap();
        let mac = seal(&key, &[b"ab", b"c"]);
        // Read again, not made again.
        let again = host_key(dir.path()).unwrap();
        assert!(is_sealed(&again, &[b"ab", b"c"], &mac));
        // The parts are framed: moving a byte across them is another message.
        assert!(!is_sealed(&again, &[b"a", b"bc"], &mac));
        assert!(!is_sealed(&again, &[b"ab", b"c"], &mac[..31]));
        let other = tempfile::tempdir().unwrap();
        let theirs = host_key(other.path()).unwrap();
        assert!(!is_sealed(&theirs, &[b"ab", b"c"], &mac));
        let path = dir.path().join(KEY_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = host_key(dir.path()).unwrap_err();
        assert!(err.contains("others may read or change it"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = host_key(dir.path()).unwrap_err();
        assert!(err.contains("32-byte key"), "{err}");
    }
}
