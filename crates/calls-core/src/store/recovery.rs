//! What a replica knows about its Redis between operations: the epoch it has seen, Redis' `run_id`,
//! and when it last reached it; from these, when live calls re-register at once and the wait opens.
//!
//! docs/reference.md#admission: after Redis lost its data, or came back after an outage longer than
//! a lease, new admissions wait one tick plus a margin so live calls re-register first. The scripts
//! tell a lost or replaced `calls:epoch` (compared with the value this replica saw last), and a
//! cluster that could not renew for longer than a lease (`calls:renewed_until` passed); this watch
//! adds what only the replica can see: Redis restarted or failed over (its `run_id` changed). A
//! replica that could not reach Redis for longer than a lease re-registers its calls the moment it
//! can, but that alone opens no wait: the others may have gone on renewing, and the wait is for the
//! whole cluster's loss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

/// A store operation's view of the link when it began; handed back on success.
#[derive(Debug, Clone, Copy)]
pub(super) struct Began {
    /// The last successful contact as this operation saw it.
    last_contact: Option<Instant>,
    /// This operation began longer than a lease after that contact.
    cut_off: Option<Duration>,
}

pub(super) struct RecoveryWatch {
    cut_off_after: Duration,
    seen_epoch: Mutex<String>,
    run_id: Mutex<Option<String>>,
    last_contact: Mutex<Option<Instant>>,
    /// Bumped each time the wait must open; a script that carried `open_wait` and succeeded
    /// records the value it saw in `wait_opened`. Counters rather than a flag, so a request made
    /// while a script is in flight is never cleared by that script.
    wait_requested: AtomicU64,
    wait_opened: AtomicU64,
    reregister: Notify,
}

impl RecoveryWatch {
    pub(super) fn new(cut_off_after: Duration) -> Self {
        Self {
            cut_off_after,
            seen_epoch: Mutex::new(String::new()),
            run_id: Mutex::new(None),
            last_contact: Mutex::new(None),
            wait_requested: AtomicU64::new(0),
            wait_opened: AtomicU64::new(0),
            reregister: Notify::new(),
        }
    }

    /// Called as every store operation begins: notes whether it begins more than a lease after the
    /// last successful contact (this replica was cut off, or paused).
    pub(super) fn begin(&self) -> Began {
        let last_contact = *lock(&self.last_contact);
        let cut_off = last_contact
            .map(|at| at.elapsed())
            .filter(|gap| *gap > self.cut_off_after);
        Began {
            last_contact,
            cut_off,
        }
    }

    /// Called when an operation succeeded. The first success after a cut-off longer than a lease
    /// asks for the live calls to re-register now (their slots may have been reclaimed meanwhile).
    pub(super) fn contact_ok(&self, began: Began) {
        let mut last = lock(&self.last_contact);
        if let Some(gap) = began.cut_off
            && *last == began.last_contact
        {
            warn!(
                out_of_reach = ?gap,
                "Redis was out of reach for longer than a lease: live calls re-register now"
            );
            self.reregister.notify_one();
        }
        *last = Some(Instant::now());
    }

    /// The epoch value this replica saw last, `""` if none: passed to every epoch-aware script.
    pub(super) fn seen_epoch(&self) -> String {
        lock(&self.seen_epoch).clone()
    }

    /// Records the epoch a script read (or wrote). `data_lost`: the script found the epoch missing
    /// or replaced under this replica; the first to report a new value asks for re-registration,
    /// unless `readded` (a renewal re-registers the batch in the same script).
    pub(super) fn saw_epoch(&self, epoch: &str, data_lost: bool, readded: bool) {
        if epoch.is_empty() {
            return;
        }
        let mut seen = lock(&self.seen_epoch);
        if data_lost && *seen != epoch {
            warn!(
                epoch,
                "Redis lost its data (calls:epoch missing or replaced): live calls re-register now and new admissions wait"
            );
            if !readded {
                self.reregister.notify_one();
            }
        }
        if *seen != epoch {
            epoch.clone_into(&mut seen);
        }
    }

    /// Records Redis' `run_id` after a (re)connect. A changed one means Redis restarted or failed
    /// over: writes of its last moments may be gone, so the live calls re-register and the wait opens.
    pub(super) fn saw_run_id(&self, run_id: &str) {
        let mut known = lock(&self.run_id);
        if let Some(previous) = known.as_deref()
            && previous != run_id
        {
            warn!(
                previous,
                run_id,
                "Redis restarted or failed over (run_id changed): live calls re-register now and new admissions wait"
            );
            self.request_wait();
            self.reregister.notify_one();
        }
        *known = Some(run_id.to_owned());
    }

    /// Whether the next epoch-aware script must open the wait; pass the ticket back to
    /// [`Self::wait_opened`] once that script succeeded.
    pub(super) fn wait_ticket(&self) -> Option<u64> {
        let requested = self.wait_requested.load(Ordering::Acquire);
        (requested > self.wait_opened.load(Ordering::Acquire)).then_some(requested)
    }

    pub(super) fn wait_opened(&self, ticket: Option<u64>) {
        if let Some(ticket) = ticket {
            self.wait_opened.fetch_max(ticket, Ordering::AcqRel);
        }
    }

    /// Resolves once the live calls should re-register now; a request made while nobody waits is
    /// kept for the next waiter.
    pub(super) async fn reregister_wanted(&self) {
        self.reregister.notified().await;
    }

    fn request_wait(&self) {
        self.wait_requested.fetch_add(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a read or a single assignment: a poisoned value is still whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    async fn wanted(watch: &RecoveryWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(1), watch.reregister_wanted())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_longer_than_a_lease_reregisters_once_and_opens_no_wait_by_itself() {
        let watch = RecoveryWatch::new(LEASE);
        let first = watch.begin();
        watch.contact_ok(first);
        assert!(!wanted(&watch).await, "no contact yet is no cut-off");
        tokio::time::advance(LEASE - Duration::from_secs(1)).await;
        watch.contact_ok(watch.begin());
        assert!(!wanted(&watch).await);

        tokio::time::advance(LEASE + Duration::from_secs(1)).await;
        let (a, b) = (watch.begin(), watch.begin());
        // Whether the whole cluster lost sight of Redis is the scripts' to tell
        // (docs/reference.md#admission).
        assert!(watch.wait_ticket().is_none());
        watch.contact_ok(a);
        watch.contact_ok(b);
        assert!(wanted(&watch).await);
        assert!(!wanted(&watch).await, "two ops of one gap ask once");
        assert!(watch.wait_ticket().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_made_while_a_script_runs_survives_it() {
        let watch = RecoveryWatch::new(LEASE);
        watch.saw_run_id("a");
        watch.saw_run_id("b");
        let ticket = watch.wait_ticket();
        watch.saw_run_id("c");
        watch.wait_opened(ticket);
        assert!(watch.wait_ticket().is_some());
        assert!(wanted(&watch).await);
    }

    #[tokio::test]
    async fn the_first_run_id_and_the_first_epoch_are_no_loss() {
        let watch = RecoveryWatch::new(LEASE);
        watch.saw_run_id("a");
        watch.saw_run_id("a");
        watch.saw_epoch("100", false, false);
        assert_eq!(watch.seen_epoch(), "100");
        assert!(watch.wait_ticket().is_none());
        assert!(!wanted(&watch).await);
        watch.saw_epoch("200", true, false);
        assert_eq!(watch.seen_epoch(), "200");
        assert!(wanted(&watch).await);
        watch.saw_epoch("200", true, false);
        assert!(
            !wanted(&watch).await,
            "a stale script reporting the same loss asks once"
        );
        watch.saw_epoch("", false, false);
        assert_eq!(watch.seen_epoch(), "200");
    }
}
