//! Group commit for the Redis store's webhook admissions: concurrent `admit` calls of one store are
//! queued (boundedly) to one driver task, which sends whatever is queued as one admission script.
//!
//! Each admission's own cost in Redis is small next to a script call's (the Lua machinery of one
//! EVALSHA; docs/benchmarks.md, webhook burst), and so is the client's per-command cost; under a
//! burst, one script for many admissions pays both once. A lone admission is sent at
//! once (a batch of one): batching adds no wait at low load, only while a batch is already in flight.
//!
//! docs/reference.md#admission-deadline: every admission is answered within its own deadline, and
//! one that is not is never admitted late. The queue holds at most a bound of admissions (one over
//! it is refused at once); a caller whose deadline passes is answered with [`Shed::Deadline`]; the
//! script refuses an admission whose deadline (mapped onto Redis' clock, earlier by a margin for
//! the answer's way back) has passed when Redis runs it; and a slot taken for a caller that stopped
//! waiting anyway (its answer came back slower than the margin) is given back at once.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Admission, Shed, StoreError};
use crate::call_sid::CallSid;

/// Most admissions in one script. Redis runs a script alone, so a batch holds every other client
/// (other replicas' admissions and renewal ticks) for as long as it runs: 64 admissions cost about
/// as much as a renewal chunk of `RENEW_CHUNK` calls, while the per-script overhead shared by 64 is
/// already a small fraction of each admission.
const MAX_BATCH: usize = 64;

/// One webhook's admission, with its arguments as the script takes them.
pub(super) struct AdmitRequest {
    pub call_sid: CallSid,
    pub policy: &'static str,
    pub lease_ms: u64,
    /// The reserved state's JSON, `''` for none.
    pub state_json: String,
    /// `''` for none.
    pub tenant: String,
    /// When the caller stops waiting (set by [`AdmitBatcher::admit`] as it queues the request).
    pub answer_by: Instant,
}

type Answer = Result<Admission, StoreError>;
type Queued = (AdmitRequest, oneshot::Sender<Answer>);

/// What runs one batch as one admission script: the Redis store, which the batcher knows only as
/// this.
pub(super) trait AdmitScript: Send + Sync + 'static {
    /// One script for `batch`, admissions in the order given, answering each in order; `Err`
    /// when the script itself failed. The script refuses an admission Redis runs after that
    /// admission's `answer_by` (less the margin for the answer's way back).
    fn admit_batch(
        &self,
        batch: &[&AdmitRequest],
    ) -> impl Future<Output = Result<Vec<Answer>, StoreError>> + Send;

    /// Frees the slots just taken for callers that had stopped waiting (they were answered with
    /// the reject mode): no slot may stay taken for a refused webhook.
    fn give_back(&self, call_sids: Vec<CallSid>) -> impl Future<Output = ()> + Send;
}

/// The queue's sending end; the driver is started by the first admission (inside the runtime)
/// and ends when this is dropped with its store.
pub(super) struct AdmitBatcher {
    queue: OnceLock<mpsc::Sender<Queued>>,
    /// How long each caller waits for its answer.
    deadline: Duration,
    /// Most admissions queued at once.
    bound: usize,
}

impl AdmitBatcher {
    pub(super) fn new(deadline: Duration, bound: usize) -> Self {
        Self {
            queue: OnceLock::new(),
            deadline,
            bound: bound.max(1),
        }
    }

    /// Whether the driver has stopped while its store lives on (it panicked, or its runtime shut
    /// down): no admission can be answered any more, and `/readyz` says so. The driver ends on
    /// its own only when the queue's sender, this batcher, is dropped.
    pub(super) fn stopped(&self) -> bool {
        self.queue.get().is_some_and(mpsc::Sender::is_closed)
    }

    /// Queues `request` and waits for its answer, at most the deadline. Dropping the wait before
    /// the batch is sent withdraws the admission (the driver skips a caller that stopped waiting).
    pub(super) async fn admit<S: AdmitScript>(
        &self,
        script: &Arc<S>,
        mut request: AdmitRequest,
    ) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.bound);
            tokio::spawn(drive(Arc::clone(script), rx));
            tx
        });
        request.answer_by = Instant::now() + self.deadline;
        let answer_by = request.answer_by;
        let (answer, answered) = oneshot::channel();
        match queue.try_send((request, answer)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Shed {
                    cause: Shed::QueueFull,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(driver_stopped()),
        }
        match tokio::time::timeout_at(answer_by, answered).await {
            Ok(answer) => answer.unwrap_or_else(|_| Err(driver_stopped())),
            Err(_) => Err(StoreError::Shed {
                cause: Shed::Deadline,
            }),
        }
    }
}

/// The driver ended under a store that lives on (a panic, or a store moved between runtimes).
fn driver_stopped() -> StoreError {
    StoreError::UnexpectedReply {
        op: "admit",
        detail: "the admission driver stopped".into(),
    }
}

/// One batch in flight at a time: while it runs, the next callers queue up and go together.
async fn drive<S: AdmitScript>(script: Arc<S>, mut queue: mpsc::Receiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A caller whose deadline passed while it queued was answered already: nothing is sent.
        batch.retain(|(_, answer)| !answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let requests: Vec<&AdmitRequest> = batch.iter().map(|(request, _)| request).collect();
        match script.admit_batch(&requests).await {
            Ok(answers) => {
                let mut unwanted = Vec::new();
                for ((request, caller), answer) in batch.drain(..).zip(answers) {
                    let new_slot = matches!(answer, Ok(Admission::Admitted { new: true, .. }));
                    if caller.send(answer).is_err() && new_slot {
                        unwanted.push(request.call_sid);
                    }
                }
                if !unwanted.is_empty() {
                    script.give_back(unwanted).await;
                }
            }
            Err(err) => {
                for (_, caller) in batch.drain(..) {
                    let _ = caller.send(Err(copy_of(&err)));
                }
            }
        }
    }
}

/// The batch's error for each of its callers. The errors an admission meets are all copyable;
/// any other keeps its message.
fn copy_of(err: &StoreError) -> StoreError {
    match err {
        StoreError::Redis { op, addr, source } => StoreError::Redis {
            op,
            addr: addr.clone(),
            source: source.clone(),
        },
        StoreError::Timeout { op, addr, timeout } => StoreError::Timeout {
            op,
            addr: addr.clone(),
            timeout: *timeout,
        },
        StoreError::NotConnected { op, addr } => StoreError::NotConnected {
            op,
            addr: addr.clone(),
        },
        StoreError::Shed { cause } => StoreError::Shed { cause: *cause },
        other => StoreError::UnexpectedReply {
            op: other.op(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The batcher's side only (Redis' is in the store suite): a script that answers every
    /// admission with a new slot after `delay`, or panics, and records what was given back.
    #[derive(Default)]
    struct Scripted {
        delay: Duration,
        panics: bool,
        given_back: Mutex<Vec<CallSid>>,
    }

    impl AdmitScript for Scripted {
        async fn admit_batch(&self, batch: &[&AdmitRequest]) -> Result<Vec<Answer>, StoreError> {
            assert!(!self.panics, "a bug in the admission path");
            tokio::time::sleep(self.delay).await;
            Ok(batch
                .iter()
                .map(|_| {
                    Ok(Admission::Admitted {
                        new: true,
                        active: 1,
                    })
                })
                .collect())
        }

        async fn give_back(&self, call_sids: Vec<CallSid>) {
            self.given_back.lock().unwrap().extend(call_sids);
        }
    }

    fn request(n: u32) -> AdmitRequest {
        AdmitRequest {
            call_sid: CallSid::parse(&format!("CA{n:032x}")).unwrap(),
            policy: "take",
            lease_ms: 30_000,
            state_json: String::new(),
            tenant: String::new(),
            answer_by: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_taken_after_its_caller_gave_up_is_given_back() {
        let script = Arc::new(Scripted {
            delay: Duration::from_secs(3),
            ..Scripted::default()
        });
        let batcher = AdmitBatcher::new(Duration::from_secs(2), 4);
        let answer = batcher.admit(&script, request(1)).await;
        assert!(matches!(
            answer,
            Err(StoreError::Shed {
                cause: Shed::Deadline
            })
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(script.given_back.lock().unwrap().len(), 1);
        assert!(!batcher.stopped());
    }

    #[tokio::test]
    async fn a_driver_that_died_is_reported_and_refuses() {
        let script = Arc::new(Scripted {
            panics: true,
            ..Scripted::default()
        });
        let batcher = AdmitBatcher::new(Duration::from_secs(2), 4);
        assert!(!batcher.stopped(), "no driver yet is no dead driver");
        assert!(batcher.admit(&script, request(1)).await.is_err());
        assert!(batcher.stopped());
        assert!(batcher.admit(&script, request(2)).await.is_err());
    }
}
