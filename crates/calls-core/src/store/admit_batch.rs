//! Group commit for the Redis store's webhook admissions: concurrent `admit` calls of one store are
//! queued to one driver task, which sends whatever is queued as one admission script.
//!
//! Each admission's own cost in Redis is small next to a script call's (the Lua machinery of one
//! EVALSHA; docs/benchmarks.md, webhook burst), and so is the client's per-command cost; under a
//! burst, one script for many admissions pays both once. A lone admission is sent at
//! once (a batch of one): batching adds no wait at low load, only while a batch is already in flight.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::{Admission, StoreError};
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
}

type Answer = Result<Admission, StoreError>;
type Queued = (AdmitRequest, oneshot::Sender<Answer>);

/// What runs one batch as one admission script: the Redis store, which the batcher knows only as
/// this.
pub(super) trait AdmitScript: Send + Sync + 'static {
    /// One script for `batch`, admissions in the order given, answering each in order; `Err`
    /// when the script itself failed.
    fn admit_batch(
        &self,
        batch: &[&AdmitRequest],
    ) -> impl Future<Output = Result<Vec<Answer>, StoreError>> + Send;
}

/// The queue's sending end; the driver is started by the first admission (inside the runtime)
/// and ends when this is dropped with its store.
#[derive(Default)]
pub(super) struct AdmitBatcher {
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

impl AdmitBatcher {
    /// Queues `request` and waits for its answer. Dropping the wait before the batch is sent
    /// withdraws the admission (the driver skips a caller that stopped waiting).
    pub(super) async fn admit<S: AdmitScript>(
        &self,
        script: &Arc<S>,
        request: AdmitRequest,
    ) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(drive(Arc::clone(script), rx));
            tx
        });
        let (answer, answered) = oneshot::channel();
        if queue.send((request, answer)).is_err() {
            return Err(stopped());
        }
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The driver's runtime shut down under a store that lives on (a store moved between runtimes).
fn stopped() -> StoreError {
    StoreError::UnexpectedReply {
        op: "admit",
        detail: "the admission driver stopped (its runtime shut down)".into(),
    }
}

/// One batch in flight at a time: while it runs, the next callers queue up and go together.
async fn drive<S: AdmitScript>(script: Arc<S>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        batch.retain(|(_, answer)| !answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let requests: Vec<&AdmitRequest> = batch.iter().map(|(request, _)| request).collect();
        match script.admit_batch(&requests).await {
            Ok(answers) => {
                for ((_, caller), answer) in batch.drain(..).zip(answers) {
                    // A caller that stopped waiting has nobody to tell.
                    let _ = caller.send(answer);
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
        other => StoreError::UnexpectedReply {
            op: other.op(),
            detail: other.to_string(),
        },
    }
}
