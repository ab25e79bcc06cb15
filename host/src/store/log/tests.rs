use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::Store;
use crate::store::contract::{
    deletes_ride_and_a_flush_commits_them, replaces_only_the_version_read, writers_share_commits,
    writes_whole_and_claims,
};
use crate::store::group::DETACHED_WAIT;

fn log_of(dir: &Path) -> Objects {
    read_log(&dir.join(LOG)).unwrap()
}

#[tokio::test]
async fn objects_are_records_of_a_private_log_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("store");
    let store = open(&folder, Durability::PowerLoss, Legacy::Leave).unwrap();
    let version = writes_whole_and_claims(&store).await;
    replaces_only_the_version_read(&store, &version).await;
    assert_eq!(
        log_of(&folder),
        [("a".into(), b"two".to_vec()), ("b".into(), b"y".to_vec())],
        "what a write returned from is in the file"
    );
    deletes_ride_and_a_flush_commits_them(&store).await;
    assert_eq!(
        log_of(&folder),
        Vec::new(),
        "a flush writes the deletes waiting"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(LOG)), 0o600);
    }
}

/// Writers that arrive together share a write, and each still gets its own answer: of
/// sixteen that read one version, one replaces it, beside sixteen plain writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_share_writes_and_a_conditional_replace_is_won_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap());
    let listed = store.clone();
    writers_share_commits(store, || listed.list().unwrap().len()).await;
    assert_eq!(log_of(dir.path()).len(), 17);
}

/// What a write returned from is in the file in either durability (a process crash
/// loses nothing the kernel was handed), and the next open finds it; a version read
/// before is not given again after a reopen.
#[tokio::test]
async fn writes_are_in_the_file_once_they_return_and_outlive_the_store() {
    for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), durability, Legacy::Leave).unwrap();
        store.put("a", b"kept").await.unwrap();
        let Claimed::Yes(seen) = store.put_if_absent("v", b"1").await.unwrap() else {
            panic!("v was free");
        };
        store.delete("v").await.unwrap();
        assert_eq!(log_of(dir.path()), [("a".into(), b"kept".to_vec())]);
        drop(store);
        let again = open(dir.path(), durability, Legacy::Leave).unwrap();
        assert_eq!(again.get("a").await.unwrap().as_deref(), Some(&b"kept"[..]));
        let Claimed::Yes(now) = again.put_if_absent("v", b"2").await.unwrap() else {
            panic!("v was deleted");
        };
        assert_ne!(now, seen);
    }
}

/// A crash in the middle of a write leaves a record cut short: the next open keeps
/// every whole record before it, and cuts the file there so that new records follow
/// whole ones.
#[tokio::test]
async fn a_record_cut_short_ends_the_log_and_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
    store.put("a", b"first").await.unwrap();
    store.put("b", b"second").await.unwrap();
    drop(store);
    let path = dir.path().join(LOG);
    let whole = std::fs::read(&path).unwrap();
    // The last record loses its last byte; then a record whose CRC fails.
    std::fs::write(&path, &whole[..whole.len() - 1]).unwrap();
    let store = open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
    assert_eq!(store.list().unwrap(), [("a".into(), b"first".to_vec())]);
    store.put("c", b"third").await.unwrap();
    drop(store);
    let mut damaged = std::fs::read(&path).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let store = open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
    assert_eq!(
        std::fs::read(path.with_extension("log.damaged")).unwrap(),
        damaged,
        "what is cut off is copied aside first"
    );
    store.put("d", b"fourth").await.unwrap();
    drop(store);
    assert_eq!(
        log_of(dir.path()),
        [
            ("a".into(), b"first".to_vec()),
            ("d".into(), b"fourth".to_vec())
        ]
    );
}

/// Records no longer live are compacted away: the file shrinks to about the live
/// ones, which the next open finds.
#[tokio::test]
async fn a_log_of_mostly_deleted_records_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::ProcessCrash, Legacy::Leave).unwrap();
    let data = vec![7u8; 4096];
    store.put("kept", b"live").await.unwrap();
    for n in 0..600 {
        let name = format!("entry-{n}");
        store.put(&name, &data).await.unwrap();
        store.delete(&name).await.unwrap();
    }
    let size = std::fs::metadata(dir.path().join(LOG)).unwrap().len();
    assert!(
        size < COMPACT_MIN + 64 * 1024,
        "{size} bytes after 2.4 MB of records"
    );
    assert!(!compacting(&dir.path().join(LOG)).exists());
    drop(store);
    assert_eq!(log_of(dir.path()), [("kept".into(), b"live".to_vec())]);
}

/// One process holds a folder: a second open waits for it, then says who to blame.
#[test]
fn a_folder_another_store_holds_is_refused_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
    let err = open(dir.path(), Durability::PowerLoss, Legacy::Leave)
        .err()
        .expect("refused");
    assert_eq!(err.code, "InUse", "{err}");
    assert!(err.message.contains("a folder of its own"), "{err}");
    drop(held);
    // Dropped: the writer lets go of the folder once its calls are done.
    open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
}

/// The folder's SQLite database, as an older version kept the outbox in it.
fn older_journal(dir: &std::path::Path) -> crate::store::JournalStore {
    crate::store::open_journal(
        dir,
        Durability::PowerLoss,
        Legacy::Leave,
        crate::store::Keeping::default(),
    )
    .unwrap()
}

/// An upgraded host finds what an older one kept as files or as rows of the folder's
/// SQLite database; what is not one of this store's objects stays where it is.
#[tokio::test]
async fn objects_left_as_files_or_rows_are_moved_in_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let is_entry = |name: &str| name.ends_with(".json");
    let journal = older_journal(dir.path());
    journal.put("row.json", b"a row").await.unwrap();
    journal.put("claim-1", b"another store's").await.unwrap();
    drop(journal);
    std::fs::write(dir.path().join("file.json"), b"a file").unwrap();
    std::fs::write(dir.path().join("other"), b"not ours").unwrap();
    let store = open(
        dir.path(),
        Durability::ProcessCrash,
        Legacy::Import(is_entry),
    )
    .unwrap();
    assert_eq!(
        store.list().unwrap(),
        [
            ("file.json".into(), b"a file".to_vec()),
            ("row.json".into(), b"a row".to_vec())
        ]
    );
    assert!(!dir.path().join("file.json").exists(), "moved, not copied");
    assert!(dir.path().join("other").exists());
    drop(store);
    let journal = older_journal(dir.path());
    assert_eq!(
        journal.writes().list().unwrap(),
        [("claim-1".into(), b"another store's".to_vec())],
        "the rows moved are gone from the database; the others stay"
    );
}

/// A log that never got its first bytes to disk (empty, a header cut short, or zeros
/// after a power cut) is a new log, not another program's file.
#[tokio::test]
async fn a_log_whose_header_never_reached_the_disk_starts_empty() {
    for start in [&b""[..], &MAGIC[..3], &[0u8; 64][..]] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG), start).unwrap();
        let store = open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap();
        store.put("a", b"x").await.unwrap();
        assert_eq!(log_of(dir.path()), [("a".into(), b"x".to_vec())]);
    }
}

/// Another program's file where the log goes is an error that names it.
#[test]
fn a_file_that_is_not_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG), b"not a log").unwrap();
    let err = open(dir.path(), Durability::PowerLoss, Legacy::Leave)
        .err()
        .expect("refused");
    assert_eq!(err.code, "NotAStoreLog", "{err}");
    assert!(err.message.contains(LOG), "{err}");
    assert_eq!(std::fs::read(dir.path().join(LOG)).unwrap(), b"not a log");
}

/// A delete nobody waits for is written within [`DETACHED_WAIT`] even when no other call
/// comes to ride with: whether the writer slept with a deadline (just after a commit)
/// or without one (idle since).
#[tokio::test]
async fn a_detached_delete_is_written_within_its_wait_without_another_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::ProcessCrash, Legacy::Leave).unwrap();
    for idle_first in [false, true] {
        store.put("a", b"x").await.unwrap();
        if idle_first {
            tokio::time::sleep(DETACHED_WAIT * 3).await;
        }
        store.delete_later("a");
        let deadline = Instant::now() + DETACHED_WAIT * 20;
        while !log_of(dir.path()).is_empty() {
            assert!(Instant::now() < deadline, "the delete was never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
