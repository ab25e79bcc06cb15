use super::*;
use crate::store::Store;
use std::sync::Arc;

#[tokio::test]
async fn objects_are_rows_written_whole_in_a_private_database() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("store");
    let store = open(
        &folder,
        Durability::PowerLoss,
        Legacy::Leave,
        Keeping::default(),
    )
    .unwrap();
    let version = super::super::contract::writes_whole_and_claims(&store).await;
    super::super::contract::replaces_only_the_version_read(&store, &version).await;
    super::super::contract::deletes_ride_and_a_flush_commits_them(store.writes()).await;
    let other = Connection::open(folder.join(DATABASE)).unwrap();
    let rows: i64 = other
        .query_row("SELECT count(*) FROM objects", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0, "a flush commits the deletes waiting for a write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(DATABASE)), 0o600);
        assert_eq!(mode(&folder.join(format!("{DATABASE}-wal"))), 0o600);
    }
}

/// Writers that arrive together share commits, and each still gets its own answer:
/// of sixteen that read one version, one replaces it, beside sixteen plain writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_share_commits_and_a_conditional_replace_is_won_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        open(
            dir.path(),
            Durability::PowerLoss,
            Legacy::Leave,
            Keeping::default(),
        )
        .unwrap(),
    );
    let writes = store.clone();
    super::super::contract::writers_share_commits(store, || writes.writes().list().unwrap().len())
        .await;
}

/// What a store says it wrote is there for the next process, in either durability
/// (a process crash loses nothing the kernel was handed).
#[tokio::test]
async fn writes_outlive_the_store_in_both_durabilities() {
    for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), durability, Legacy::Leave, Keeping::default()).unwrap();
        store.put("a", b"kept").await.unwrap();
        // Not dropped: as if the process died here.
        std::mem::forget(store);
        let again = open(dir.path(), durability, Legacy::Leave, Keeping::default()).unwrap();
        assert_eq!(again.get("a").await.unwrap().as_deref(), Some(&b"kept"[..]));
    }
}

/// An upgraded host finds the objects a folder store left as files; what is not one
/// of this store's objects stays a file.
#[tokio::test]
async fn objects_left_as_files_are_moved_in_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let digest = "ab".repeat(32);
    let names = [
        format!("answer-{digest}"),
        format!("answer-{}", "cd".repeat(32)),
    ];
    for name in &names {
        std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    // Not this store's names: another store's objects in a shared folder (a
    // checkpoint, an outbox entry), keys, temporary files, what was set aside.
    let others = [
        digest.clone(),
        format!("{digest}.json"),
        ".key".to_owned(),
        format!("answer-{digest}.refused"),
        format!(".answer-{digest}.1.2.tmp"),
    ];
    for name in &others {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    let is_record = |name: &str| name.strip_prefix("answer-").is_some_and(is_digest);
    let store = open(
        dir.path(),
        Durability::PowerLoss,
        Legacy::Import(is_record),
        Keeping::default(),
    )
    .unwrap();
    for name in &names {
        assert_eq!(
            store.get(name).await.unwrap().as_deref(),
            Some(name.as_bytes())
        );
        assert!(!dir.path().join(name).exists(), "{name} moved, not copied");
    }
    for name in &others {
        assert!(dir.path().join(name).exists(), "{name} left alone");
        assert_eq!(store.get(name).await.unwrap(), None);
    }
}

/// A test format: an object's bytes are the ms since the epoch it expires at, or
/// anything else to be kept.
fn expiry_in_text(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.parse().ok()
}

/// A store in `dir` whose objects expire as [`expiry_in_text`] reads them, its
/// names in memory (as a folder's idempotency store keeps them).
fn expiring(dir: &Path) -> JournalStore {
    let keeping = Keeping {
        expiry: Some(expiry_in_text),
        names_in_memory: true,
    };
    open(dir, Durability::PowerLoss, Legacy::Leave, keeping).unwrap()
}

fn rows(dir: &Path) -> Vec<(String, Option<i64>)> {
    let connection = Connection::open(dir.join(DATABASE)).unwrap();
    let mut statement = connection
        .prepare("SELECT name, expires_ms FROM objects ORDER BY name")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Each write notes when its row expires, and the writer deletes the expired rows
/// in a look after the first batch it commits: what is still to be read, or never
/// expires, stays. A row whose bytes an older version changes in place has its
/// expiry read again.
#[tokio::test]
async fn expired_rows_are_deleted_by_the_writer_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = expiring(dir.path());
    let later = (SystemTime::now() + Duration::from_secs(3_600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    // The look after the first batch: `gone` goes at once.
    store.put("gone", b"1").await.unwrap();
    assert_eq!(
        store.put_if_absent("kept", later.as_bytes()).await.unwrap(),
        Claimed::Yes(version_of(later.as_bytes()))
    );
    store.put("forever", b"no expiry").await.unwrap();
    store.put("changed", later.as_bytes()).await.unwrap();
    let Claimed::Yes(version) = store
        .put_if_absent("replaced", later.as_bytes())
        .await
        .unwrap()
    else {
        panic!("replaced was free");
    };
    // Replaced by a record that has expired: the column follows the bytes.
    assert!(matches!(
        store
            .put_if_match("replaced", b"2", &version)
            .await
            .unwrap(),
        Claimed::Yes(_)
    ));
    // An older version's conditional replace changes the bytes alone.
    Connection::open(dir.path().join(DATABASE))
        .unwrap()
        .execute(
            "UPDATE objects SET data = X'35', version = 'old' WHERE name = 'changed'",
            [],
        )
        .unwrap();
    // No look is due again for a while: the expired rows wait, their expiry noted
    // or to be read again.
    let expected_later: i64 = later.parse().unwrap();
    assert_eq!(
        rows(dir.path()),
        [
            ("changed".to_owned(), None),
            ("forever".to_owned(), Some(NEVER)),
            ("kept".to_owned(), Some(expected_later)),
            ("replaced".to_owned(), Some(2)),
        ]
    );
    drop(store);
    let store = expiring(dir.path());
    store.put("trigger", b"x").await.unwrap();
    store.writes().flush().await.unwrap();
    assert_eq!(
        rows(dir.path()),
        [
            ("forever".to_owned(), Some(NEVER)),
            ("kept".to_owned(), Some(expected_later)),
            ("trigger".to_owned(), Some(NEVER)),
        ]
    );
}

/// A database an older version made (no `expires_ms` column) gains it when it
/// opens; a look reads the expiry of at most [`SWEEP_ROWS`] rows and deletes at most
/// as many, and while more wait the writer looks again after the next batch.
#[tokio::test]
async fn an_older_database_gains_expiries_and_a_backlog_goes_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let expired = 2 * SWEEP_ROWS + SWEEP_ROWS / 2;
    {
        let old = Connection::open(dir.path().join(DATABASE)).unwrap();
        old.execute_batch(
            "CREATE TABLE objects (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL, \
             version TEXT NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        old.execute_batch("BEGIN").unwrap();
        for n in 0..expired {
            old.execute(
                "INSERT INTO objects VALUES (?1, ?2, 'v')",
                params![format!("old{n:05}"), n.to_string().into_bytes()],
            )
            .unwrap();
        }
        old.execute(
            "INSERT INTO objects VALUES ('unreadable', X'00ff', 'v')",
            [],
        )
        .unwrap();
        old.execute_batch("COMMIT").unwrap();
    }
    // One look, by hand: its bound of rows read, and of rows deleted.
    let now_ms = i64::try_from(expired).unwrap();
    {
        let journal = Journal {
            connection: connect(&dir.path().join(DATABASE), Durability::PowerLoss).unwrap(),
            expiry: Some(expiry_in_text),
            next_sweep: Instant::now(),
            names: None,
            deleted: Vec::new(),
        };
        journal.add_expiries().unwrap();
        assert!(journal.look(now_ms).unwrap(), "more wait");
    }
    let left = rows(dir.path());
    assert_eq!(left.len(), expired + 1 - SWEEP_ROWS);
    assert!(left.iter().all(|(_, expires)| expires.is_none()));
    let store = expiring(dir.path());
    store.put("first", b"x").await.unwrap();
    // A look that found its bound is due again after the next batch: the first
    // flush's; the second returns once that look is done.
    store.writes().flush().await.unwrap();
    store.writes().flush().await.unwrap();
    assert_eq!(
        rows(dir.path()),
        [
            ("first".to_owned(), Some(NEVER)),
            ("unreadable".to_owned(), Some(NEVER))
        ]
    );
}

/// With names in memory, a read of a name the store does not hold answers at once
/// (a row another connection wrote behind its back is not seen: the owner writes
/// every name it reads through the store), and the names follow every write and
/// delete, a delete and a write of one name in one batch included.
#[tokio::test]
async fn names_in_memory_follow_every_write_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let keeping = Keeping {
        expiry: None,
        names_in_memory: true,
    };
    open(dir.path(), Durability::PowerLoss, Legacy::Leave, keeping)
        .unwrap()
        .put("before", b"1")
        .await
        .unwrap();
    let store = open(dir.path(), Durability::PowerLoss, Legacy::Leave, keeping).unwrap();
    assert_eq!(
        store.get("before").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    Connection::open(dir.path().join(DATABASE))
        .unwrap()
        .execute(
            "INSERT INTO objects VALUES ('behind', X'00', 'v', NULL)",
            [],
        )
        .unwrap();
    assert_eq!(store.get("behind").await.unwrap(), None, "not read");
    store.put("a", b"2").await.unwrap();
    assert!(store.get("a").await.unwrap().is_some());
    store.delete("a").await.unwrap();
    assert_eq!(store.get("a").await.unwrap(), None);
    assert!(matches!(
        store.put_if_absent("b", b"3").await.unwrap(),
        Claimed::Yes(_)
    ));
    assert!(store.get("b").await.unwrap().is_some());
    // The writer now waits a while for a write before it commits a detached delete:
    // the delete and the write of `b` ride in one batch, the delete first.
    store.writes().delete_later("b");
    store.put("b", b"4").await.unwrap();
    assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"4"[..]));
}

/// Another program's file where the database goes is an error that names it, not
/// a panic or a silent new store.
#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(DATABASE),
        b"not a database, but long enough to be read as a header",
    )
    .unwrap();
    let err = open(
        dir.path(),
        Durability::PowerLoss,
        Legacy::Leave,
        Keeping::default(),
    )
    .err()
    .expect("refused");
    assert!(err.message.contains("not a database"), "{err}");
}
