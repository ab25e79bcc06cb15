use std::io::Write as _;

use async_trait::async_trait;

use super::*;
use crate::events::EventKind;
use crate::sfn::ActivityTask;
use crate::store::FolderStore;

/// Step Functions as far as the outbox reaches it: the tokens answers are sent for.
#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

#[async_trait]
impl StepFunctions for Recorded {
    async fn poll(&self, _: &str, _: &str) -> Result<Option<ActivityTask>, SfnError> {
        Ok(None)
    }
    async fn send_success(&self, token: &str, _: &str) -> Result<(), SfnError> {
        self.0.lock().unwrap().push(token.to_owned());
        Ok(())
    }
    async fn send_failure(&self, token: &str, _: &str, _: &str) -> Result<(), SfnError> {
        self.0.lock().unwrap().push(token.to_owned());
        Ok(())
    }
    async fn send_heartbeat(&self, _: &str) -> Result<(), SfnError> {
        Ok(())
    }
}

/// Log lines, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn entry(token: &str) -> Entry {
    Entry {
        activity: "arn:aws:states:us-east-1:000000000000:activity:a".into(),
        task_id: format!("task-{token}"),
        handler_digest: "00".repeat(32),
        written_at_ms: now_ms(),
        token: token.into(),
        answer: EntryAnswer::Success {
            output: "{}".into(),
        },
        guest: true,
        claim: None,
    }
}

/// `outbox.recover` with its JSON log lines.
fn recover_logged(outbox: &Arc<Outbox>, sfn: &Arc<dyn StepFunctions>) -> (usize, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    let recovered = tracing::subscriber::with_default(subscriber, || {
        outbox.recover(
            sfn,
            &Events::default(),
            &DeliveryOptions::default(),
            &|_| None,
        )
    });
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (recovered, logged)
}

#[tokio::test]
async fn only_entries_the_host_wrote_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("outbox");
    let outbox = Arc::new(Outbox::open(&folder, 1 << 20, Durability::PowerLoss).unwrap());
    let kept = Outbox::name("kept-token");
    assert!(outbox.write(&kept, &entry("kept-token")).await.is_some());
    let sealed = outbox.store.get(&kept).await.unwrap().unwrap();
    drop(outbox);

    // Planted by hand, in the format entries had before they carried a MAC.
    let plain = Outbox::name("planted-token");
    let json = serde_json::to_vec(&entry("planted-token")).unwrap();
    std::fs::write(folder.join(&plain), &json).unwrap();
    // The host's own entry under another name (the MAC covers the name).
    let renamed = Outbox::name("renamed-token");
    std::fs::write(folder.join(&renamed), &sealed).unwrap();
    // A header whose MAC is made up.
    let forged = Outbox::name("forged-token");
    let mut data = format!("{HEADER}{}\n", "ab".repeat(32)).into_bytes();
    data.extend_from_slice(&serde_json::to_vec(&entry("forged-token")).unwrap());
    std::fs::write(folder.join(&forged), &data).unwrap();
    // The host's own entry with its content changed.
    let changed = Outbox::name("changed-token");
    let body = serde_json::to_vec(&entry("changed-token")).unwrap();
    let sealer = Outbox::open(&folder, 1 << 20, Durability::PowerLoss).unwrap();
    let mut data = sealer.seal(&changed, &body);
    drop(sealer);
    let last = data.len() - 2;
    data[last] = b' ';
    let mut file = std::fs::File::create(folder.join(&changed)).unwrap();
    file.write_all(&data).unwrap();
    // Planted as files (as an older version kept entries): the next start moves them
    // into the log, and checks them with the rest.
    let outbox = Arc::new(Outbox::open(&folder, 1 << 20, Durability::PowerLoss).unwrap());

    let sfn = Arc::new(Recorded::default());
    let dyn_sfn: Arc<dyn StepFunctions> = sfn.clone();
    let (recovered, logged) = recover_logged(&outbox, &dyn_sfn);
    assert_eq!(recovered, 1);
    for _ in 0..200 {
        if !sfn.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*sfn.0.lock().unwrap(), ["kept-token"]);

    let refused: Vec<serde_json::Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &serde_json::Value| line["event"] == "outbox:refused")
        .collect();
    assert_eq!(refused.len(), 4, "{logged}");
    for line in &refused {
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["outcome"], "set aside", "{line}");
    }
    for name in [&plain, &renamed, &forged, &changed] {
        assert!(logged.contains(name.as_str()), "{name} not in {logged}");
        assert!(!outbox.dir.join(name).exists(), "{name}");
        assert!(
            outbox.dir.join(format!("{name}{REFUSED_SUFFIX}")).exists(),
            "{name}"
        );
    }

    // What was set aside stays aside: a later start neither sends nor refuses it again.
    let again = outbox.recover(
        &dyn_sfn,
        &Events::default(),
        &DeliveryOptions::default(),
        &|_| None,
    );
    assert_eq!(again, 0);
    assert!(
        outbox
            .dir
            .join(sfn_wasm_engine::host_folder::KEY_FILE)
            .exists()
    );
}

/// A host killed after its answer was sent, before its idempotency claim was settled:
/// the next start delivers the entry, stores the guest's answer under the key (so a
/// duplicate does not run the guest again once the claim would have expired), and
/// ends the task with `task:done`, `recovered: true`. Found closed (it was most likely
/// taken before the kill), it is `task:undelivered` at INFO, not an error.
#[tokio::test]
async fn a_recovered_answer_settles_its_claim_and_ends_with_task_done() {
    use crate::idempotency::Lookup;
    let dir = tempfile::tempdir().unwrap();
    let outbox =
        Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20, Durability::PowerLoss).unwrap());
    let store: Arc<dyn Store> = Arc::new(FolderStore::open(&dir.path().join("answers")).unwrap());
    let keys = Arc::new(ActivityIdempotency::new(
        store,
        "/orderId".into(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let activity = entry("t").activity;
    let mut sent = Vec::new();
    for (token, order) in [("t-1", "o-1"), ("t-2", "o-2")] {
        let input = format!(r#"{{"orderId":"{order}"}}"#);
        let Lookup::Run(claim) = keys.look_up(&activity, &input).await else {
            panic!("runs");
        };
        let mut kept = entry(token);
        kept.answer = EntryAnswer::Success {
            output: format!(r#"{{"order":"{order}"}}"#),
        };
        kept.claim = Some(claim.to_ref());
        assert!(outbox.write(&Outbox::name(token), &kept).await.is_some());
        sent.push(input);
    }
    // t-1 is taken; t-2 was taken before the kill, and is now refused as closed.
    let sfn = Arc::new(ClosedFor("t-2", Recorded::default()));
    let dyn_sfn: Arc<dyn StepFunctions> = sfn.clone();
    let events = Events::default();
    let mut heard = events.subscribe();
    let claims = keys.clone();
    let found = outbox.recover(
        &dyn_sfn,
        &events,
        &DeliveryOptions::default(),
        &move |arn| (arn == activity).then(|| claims.clone()),
    );
    assert_eq!(found, 2);
    let mut done = Vec::new();
    let mut undelivered = Vec::new();
    while done.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("task:done for each recovered answer")
            .unwrap();
        if let EventKind::Task { task, event, .. } = event.kind {
            assert!(task.recovered);
            match event {
                TaskEvent::Done(d) => done.push((task.task_id.to_string(), d.outcome)),
                TaskEvent::Undelivered {
                    probably_delivered, ..
                } => undelivered.push(probably_delivered),
                _ => {}
            }
        }
    }
    done.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        done,
        [
            ("task-t-1".to_owned(), TaskOutcome::Success),
            ("task-t-2".to_owned(), TaskOutcome::Closed)
        ]
    );
    assert_eq!(
        undelivered,
        [true],
        "closed after a restart: probably delivered"
    );
    // Both claims hold the guest's answer now.
    for (input, order) in sent.iter().zip(["o-1", "o-2"]) {
        let Lookup::Stored(Answer::Success { output }) =
            keys.look_up(&entry("t").activity, input).await
        else {
            panic!("the recovered answer is stored under {order}");
        };
        assert!(output.contains(order));
    }
}

/// Refuses the answers of one token as closed, as Step Functions does once a task is
/// answered.
struct ClosedFor(&'static str, Recorded);

#[async_trait]
impl StepFunctions for ClosedFor {
    async fn poll(&self, a: &str, w: &str) -> Result<Option<ActivityTask>, SfnError> {
        self.1.poll(a, w).await
    }
    async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
        if token == self.0 {
            return Err(SfnError::TaskClosed("TaskTimedOut: Task Timed Out".into()));
        }
        self.1.send_success(token, output).await
    }
    async fn send_failure(&self, token: &str, e: &str, c: &str) -> Result<(), SfnError> {
        self.1.send_failure(token, e, c).await
    }
    async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError> {
        self.1.send_heartbeat(token).await
    }
}

/// A volume that never finishes a write.
struct Hung;

#[async_trait]
impl Store for Hung {
    async fn read(&self, _: &str) -> Result<Option<crate::store::Versioned>, StoreError> {
        std::future::pending().await
    }
    async fn put(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn put_if_absent(&self, _: &str, _: &[u8]) -> Result<crate::store::Claimed, StoreError> {
        std::future::pending().await
    }
    async fn put_if_match(
        &self,
        _: &str,
        _: &[u8],
        _: &crate::store::Version,
    ) -> Result<crate::store::Claimed, StoreError> {
        std::future::pending().await
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// A hung outbox volume delays an answer by the write's deadline, then it is sent
/// anyway (logged: not made durable).
#[tokio::test(start_paused = true)]
async fn a_hung_volume_does_not_stall_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut opened =
        Outbox::open(&dir.path().join("outbox"), 1 << 20, Durability::PowerLoss).unwrap();
    opened.store = Arc::new(Hung);
    let outbox = Arc::new(opened);
    let sfn = Arc::new(Recorded::default());
    let task = TaskRef {
        task_id: "t".into(),
        handler_digest: "d".into(),
        recovered: false,
    };
    let kept = outbox.keep(
        Arc::new(SfnTransport::new(sfn.clone(), "hung-token".into())),
        "hung-token",
        &task,
        "arn:a",
    );
    let started = tokio::time::Instant::now();
    let answer = Answer::Success {
        output: "{}".into(),
    };
    tokio::time::timeout(WRITE_DEADLINE * 2, kept.transport().send(&answer))
        .await
        .expect("sent past the write's deadline")
        .unwrap();
    assert!(started.elapsed() >= WRITE_DEADLINE);
    assert_eq!(*sfn.0.lock().unwrap(), ["hung-token"]);
}
