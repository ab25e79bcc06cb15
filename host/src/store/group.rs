//! Group commit, shared by the stores that keep their objects in one file of a folder
//! ([`open_journal`](super::open_journal): SQLite; [`open_log`](super::open_log): an
//! append-only log): one writer thread takes every call that arrived while the previous
//! commit ran, applies them in one batch and commits once, so N answers arriving
//! together cost one write (and one `fsync` for power-loss), not N.
//!
//! What a handoff to the writer costs is a thread wake-up each way, and on a VM a wake-up
//! is several µs of CPU on both sides (`BENCHMARKS.md`, issue 37): so a call wakes the
//! writer only when it must. Deletes nobody waits for
//! ([`GroupCommitStore::delete_later`]) never wake a writer that will look again by
//! itself: after each commit it waits up to [`DETACHED_WAIT`] with a deadline, and takes
//! what came meanwhile with the next call, or at the deadline. A caller wakes it only
//! when it sleeps (a mutex and a flag, no syscall when it is busy).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{Claimed, Store, StoreError, Version, Versioned};

/// The most calls one commit takes: a bound on what one failed commit fails.
const MAX_BATCH: usize = 512;

/// How long deletes nobody waits for ([`GroupCommitStore::delete_later`]) wait for a
/// write to ride with, rather than cost a commit (and a wake-up) of their own: one task
/// at a time makes one commit per task instead of two. [`GroupCommitStore::flush`] ends
/// the wait.
pub(super) const DETACHED_WAIT: Duration = Duration::from_millis(100);

/// Every object, by name, with its bytes.
pub type Objects = Vec<(String, Vec<u8>)>;

/// What a store keeps its objects in, driven by the writer thread a batch at a time:
/// [`begin`](Self::begin), the batch's calls in order, then [`commit`](Self::commit).
/// Reads in a batch see the batch's own writes before them.
pub(super) trait Backend: Send + 'static {
    /// Starts a batch.
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Whether an error has already undone the batch (SQLite rolls a transaction back
    /// on a full disk or an I/O error): the rest of the batch then fails with it rather
    /// than run, and commit, on its own.
    fn undone(&self) -> bool;
    fn read(&mut self, name: &str) -> Result<Option<Versioned>, StoreError>;
    fn list(&mut self) -> Result<Objects, StoreError>;
    fn put(&mut self, name: &str, data: &[u8]) -> Result<(), StoreError>;
    fn put_if_absent(&mut self, name: &str, data: &[u8]) -> Result<Claimed, StoreError>;
    fn put_if_match(
        &mut self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError>;
    fn delete(&mut self, name: &str) -> Result<(), StoreError>;
    /// Makes the batch as durable as the store promises; on an error, nothing of it
    /// stays.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// After a batch's replies are sent: housekeeping nobody waits for (the journal's
    /// expired rows), in a transaction of its own so that it can never undo a batch.
    fn tidy(&mut self) {}
}

/// A store whose calls one writer thread applies in group commits; the handle the
/// callers share. Dropping it ends the thread once the calls made before are done.
pub struct GroupCommitStore {
    queue: Arc<Queue>,
}

/// The calls waiting for the writer, and whether it sleeps.
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    calls: VecDeque<Call>,
    /// Calls in `calls` that someone waits for (not detached deletes).
    waited: usize,
    /// The writer sleeps: a waited call wakes it.
    asleep: bool,
    /// The writer sleeps without a deadline: any call wakes it.
    idle: bool,
    /// Every handle is gone: the writer ends once `calls` is empty.
    closed: bool,
}

/// A call to the writer thread, with where its result goes.
enum Call {
    Read(String, Reply<Option<Versioned>>),
    Put(String, Vec<u8>, Reply<()>),
    PutIfAbsent(String, Vec<u8>, Reply<Claimed>),
    PutIfMatch(String, Vec<u8>, Version, Reply<Claimed>),
    Delete(String, Option<Reply<()>>),
    /// Commits what is waiting (deletes nobody waits for), then answers.
    Flush(Reply<()>),
    /// Answered on a std channel: [`GroupCommitStore::list`] blocks its caller.
    List(mpsc::Sender<Result<Objects, StoreError>>),
}

impl Call {
    /// A delete nobody waits for.
    fn is_detached(&self) -> bool {
        matches!(self, Call::Delete(_, None))
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What a call's reply waits for: the commit of its batch.
type Answer = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// `reply` with `done`, once the commit is known: a write that its commit lost, or a
/// read in a batch that failed, answers the commit's error.
fn answer<T: Send + 'static>(reply: Reply<T>, done: Result<T, StoreError>) -> Answer {
    Box::new(move |committed| {
        let _ = reply.send(committed.clone().and(done));
    })
}

fn stopped() -> StoreError {
    StoreError {
        code: "Internal".into(),
        message: "the store's writer thread stopped before it answered".into(),
    }
}

impl GroupCommitStore {
    /// Starts the writer thread (`name`) over `backend`.
    ///
    /// # Errors
    /// [`StoreError`] when the thread cannot be started.
    pub(super) fn spawn(name: &str, mut backend: impl Backend) -> Result<Self, StoreError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
        });
        let writer = queue.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _closing = CloseOnExit(&writer);
                write_loop(&mut backend, &writer);
            })
            .map_err(|err| StoreError::io(&err))?;
        Ok(Self { queue })
    }

    /// Every object, by name, after every call made before this one (a
    /// [`delete_later`](Self::delete_later) included): what a start recovers, before
    /// any task runs. Blocks the calling thread until the writer answers.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn list(&self) -> Result<Objects, StoreError> {
        let (reply, result) = mpsc::channel();
        self.send(Call::List(reply))?;
        result.recv().map_err(|_| stopped())?
    }

    /// Removes `name` in the next commit without waiting for it: for what only costs a
    /// second look if it stays (a settled outbox entry). It rides with the next write,
    /// or is committed within [`DETACHED_WAIT`].
    pub fn delete_later(&self, name: &str) {
        let _ = self.send(Call::Delete(name.to_owned(), None));
    }

    /// Returns once every call made before it is committed (deletes that
    /// [`delete_later`](Self::delete_later) left waiting for a write included): before
    /// a clean exit.
    ///
    /// # Errors
    /// [`StoreError`] when the commit failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.ask(Call::Flush).await
    }

    /// Whether the writer is at work (committing a batch, or with calls waiting for
    /// it): a call sent now rides with a batch rather than wake it.
    pub fn busy(&self) -> bool {
        let state = self.queue.lock();
        !state.asleep || state.waited > 0
    }

    fn send(&self, call: Call) -> Result<(), StoreError> {
        let mut state = self.queue.lock();
        if state.closed {
            return Err(stopped());
        }
        let waited = !call.is_detached();
        state.calls.push_back(call);
        state.waited += usize::from(waited);
        // A detached delete leaves a writer that will look again by itself asleep.
        let wake = state.asleep && (waited || state.idle);
        drop(state);
        if wake {
            self.queue.wake.notify_one();
        }
        Ok(())
    }

    async fn ask<T>(&self, call: impl FnOnce(Reply<T>) -> Call) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(call(reply))?;
        result.await.map_err(|_| stopped())?
    }
}

impl Drop for GroupCommitStore {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

/// Closes the queue when the writer thread ends, a panic included: the calls waiting
/// are dropped (their callers hear that the writer stopped), and later calls fail at
/// once rather than wait for ever.
struct CloseOnExit<'a>(&'a Queue);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.calls.clear();
        state.waited = 0;
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves the queue itself consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes calls until every handle is gone: each round, every call waiting (up to
/// [`MAX_BATCH`]) in one batch, then their replies. After a commit it waits up to
/// [`DETACHED_WAIT`] for the next call before it sleeps without a deadline, so that
/// detached deletes arriving meanwhile need not wake it.
fn write_loop(backend: &mut impl Backend, queue: &Queue) {
    let mut deadline = None;
    loop {
        let mut state = queue.lock();
        loop {
            if state.waited > 0 || (state.closed && !state.calls.is_empty()) {
                break;
            }
            if state.closed {
                return;
            }
            let now = Instant::now();
            match deadline {
                Some(at) if now >= at => {
                    deadline = None;
                    if !state.calls.is_empty() {
                        break;
                    }
                }
                Some(at) => {
                    state.asleep = true;
                    state = queue
                        .wake
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    state.asleep = false;
                }
                None if state.calls.is_empty() => {
                    (state.asleep, state.idle) = (true, true);
                    state = queue
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    (state.asleep, state.idle) = (false, false);
                }
                // Only detached deletes: they wait for a write to ride with.
                None => deadline = Some(now + DETACHED_WAIT),
            }
        }
        let take = state.calls.len().min(MAX_BATCH);
        let batch: Vec<Call> = state.calls.drain(..take).collect();
        state.waited -= batch.iter().filter(|call| !call.is_detached()).count();
        drop(state);
        commit(backend, batch);
        backend.tidy();
        deadline = Some(Instant::now() + DETACHED_WAIT);
    }
}

/// Applies `batch` and commits it; every call is answered after the commit, with its
/// error if it failed.
fn commit(backend: &mut impl Backend, batch: Vec<Call>) {
    let mut began = backend.begin();
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    for call in batch {
        let began = &mut began;
        answers.push(match call {
            Call::Read(name, reply) => answer(reply, within(began, backend, |b| b.read(&name))),
            Call::Put(name, data, reply) => {
                answer(reply, within(began, backend, |b| b.put(&name, &data)))
            }
            Call::PutIfAbsent(name, data, reply) => answer(
                reply,
                within(began, backend, |b| b.put_if_absent(&name, &data)),
            ),
            Call::PutIfMatch(name, data, version, reply) => answer(
                reply,
                within(began, backend, |b| b.put_if_match(&name, &data, &version)),
            ),
            Call::List(reply) => {
                let listed = within(began, backend, Backend::list);
                Box::new(move |committed: &Result<(), StoreError>| {
                    let _ = reply.send(committed.clone().and(listed));
                })
            }
            Call::Flush(reply) => answer(reply, Ok(())),
            Call::Delete(name, reply) => {
                let done = within(began, backend, |b| b.delete(&name));
                match reply {
                    Some(reply) => answer(reply, done),
                    None => Box::new(|_| {}),
                }
            }
        });
    }
    let committed = began.and_then(|()| backend.commit());
    for answer in answers {
        answer(&committed);
    }
}

/// Runs `work` in the batch (`began`). Once an error has undone the batch, `began`
/// holds it, and the rest of the batch fails with it.
fn within<B: Backend, T>(
    began: &mut Result<(), StoreError>,
    backend: &mut B,
    work: impl FnOnce(&mut B) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    began.clone()?;
    let done = work(backend);
    if let Err(err) = &done
        && backend.undone()
    {
        *began = Err(err.clone());
    }
    done
}

#[async_trait]
impl Store for GroupCommitStore {
    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.ask(|reply| Call::Put(name.to_owned(), data.to_vec(), reply))
            .await
    }

    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.ask(|reply| Call::Read(name.to_owned(), reply)).await
    }

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        self.ask(|reply| Call::PutIfAbsent(name.to_owned(), data.to_vec(), reply))
            .await
    }

    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        self.ask(|reply| Call::PutIfMatch(name.to_owned(), data.to_vec(), version.clone(), reply))
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.ask(|reply| Call::Delete(name.to_owned(), Some(reply)))
            .await
    }
}
