//! The store contract: one suite, two backends. Every behaviour the in-process and Redis stores
//! share runs against both: the Redis side against a real `redis-server` this binary starts per
//! test, the in-process side in paused time (its leases lapse without waiting for them).

use std::sync::Arc;
use std::time::Duration;

use calls_core::call_sid::CallSid;
use calls_core::calls::{Calls, CallsConfig};
use calls_core::events::NoEvents;
use calls_core::state::{CallState, CallStatus, EndReason};
use calls_core::store::cluster::ClusterView;
use calls_core::store::{
    Admission, AdmitPolicy, CallStore, MemoryStore, RedisSettings, RedisStore, RedisTls, Refusal,
    RenewBatch, Renewal, ReplicaHeartbeat, ResumeGrant, StoreConfig, StreamAdmission, StreamClaim,
    StreamEnd,
};
use testkit::RedisServer;

const LEASE: Duration = Duration::from_secs(30);

fn sid(n: usize) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).unwrap()
}

/// Admits `call_sid` with `lease`, taking a slot if one is free.
async fn take(store: &dyn CallStore, call_sid: &CallSid, lease: Duration) -> Admission {
    store
        .admit(call_sid, AdmitPolicy::MayTakeSlot, lease, None)
        .await
        .unwrap()
}

/// Reclaims lapsed slots the way every tick does (a renewal with no call of its own).
async fn reclaim(store: &dyn CallStore) -> Vec<String> {
    store
        .renew(&batch(LEASE, Vec::new()))
        .await
        .unwrap()
        .reclaimed
}

/// A stream's start for `call_sid` with `token`, as an active state of replica `r1`.
async fn start(
    store: &dyn CallStore,
    call_sid: &CallSid,
    token: &str,
    policy: AdmitPolicy,
    lease: Duration,
) -> StreamAdmission {
    let mut fresh = CallState::reserved(call_sid.as_str(), "r1");
    fresh.status = CallStatus::Active;
    fresh.stream_sid = Some(format!("MZ{token}"));
    store
        .start_stream(call_sid, token, policy, lease, &fresh, None.into())
        .await
        .unwrap()
}

/// Whether the store asks for its live calls to re-register now.
async fn reregister_wanted(store: &dyn CallStore) -> bool {
    tokio::time::timeout(Duration::from_millis(50), store.reregister_wanted())
        .await
        .is_ok()
}

/// An admission that fails, and its error.
async fn take_err(store: &dyn CallStore, call_sid: &CallSid) -> calls_core::store::StoreError {
    store
        .admit(call_sid, AdmitPolicy::MayTakeSlot, LEASE, None)
        .await
        .unwrap_err()
}

/// A renewal batch from replica `r1` for `calls` (call SID, lock token, state).
fn batch(lease: Duration, calls: Vec<(CallSid, &str, Option<CallState>)>) -> RenewBatch {
    RenewBatch {
        lease,
        heartbeat: ReplicaHeartbeat {
            id: "r1".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            calls_active: calls.len() as u64,
            draining: false,
            max_concurrent_calls: 5,
            renew_interval_ms: 1000,
            tenant_key: None,
            default_tenant_limit: None,
        },
        calls: calls
            .into_iter()
            .map(|(call_sid, token, state)| Renewal {
                call_sid,
                lock_token: token.into(),
                state,
            })
            .collect(),
        heartbeat_ttl: Duration::from_secs(3),
    }
}

fn config(limit: u64) -> StoreConfig {
    StoreConfig {
        limit,
        recovery_holdoff: Duration::ZERO,
        ..StoreConfig::default()
    }
}

/// Handles on one logical store. Redis: one connection per handle; memory: the same store shared.
struct Fixture {
    stores: Vec<Arc<dyn CallStore>>,
    redis: Option<RedisServer>,
}

impl Fixture {
    fn store(&self) -> &dyn CallStore {
        self.stores[0].as_ref()
    }

    /// Sets a tenant's own cap as an operator does (`prosaas-calls tenants set`), in Redis; the
    /// in-process store has only the default cap. Returns whether it was set.
    async fn set_tenant_limit(&self, tenant: &str, limit: u64) -> bool {
        let Some(server) = &self.redis else {
            return false;
        };
        cluster_view(server)
            .set_tenant_limit(tenant, Some(limit))
            .await
            .unwrap();
        true
    }
}

/// The operator's view of `server`'s Redis: the one writer of tenant caps.
fn cluster_view(server: &RedisServer) -> ClusterView {
    let settings = RedisSettings::new(&server.url(), RedisTls::default()).unwrap();
    ClusterView::new(&settings, Duration::from_secs(2)).unwrap()
}

async fn memory(config: StoreConfig, handles: usize) -> Fixture {
    let store: Arc<dyn CallStore> = Arc::new(MemoryStore::new(config));
    Fixture {
        stores: vec![store; handles],
        redis: None,
    }
}

async fn redis(config: StoreConfig, handles: usize) -> Fixture {
    let server = RedisServer::start().expect("start redis-server");
    let mut stores: Vec<Arc<dyn CallStore>> = Vec::new();
    for _ in 0..handles {
        let store = RedisStore::connect(&server.url(), config.clone())
            .await
            .expect("connect to redis");
        stores.push(Arc::new(store));
    }
    Fixture {
        stores,
        redis: Some(server),
    }
}

/// Runs a scenario against both backends: `suite!(name, |make| body)` defines `name::memory` and
/// `name::redis`, each handing the body a constructor `make(config, handles)`. The in-process
/// store runs in paused time: a sleep past a lease returns at once, with the lease lapsed.
macro_rules! suite {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn memory() {
                $body(super::memory).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                $body(super::redis).await;
            }
        }
    };
}

type Make<F> = fn(StoreConfig, usize) -> F;

async fn thousand_racing_admissions_take_exactly_the_limit<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(50), 8).await;
    let mut tasks = Vec::new();
    for n in 0..1000 {
        let store = fx.stores[n % fx.stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            store
                .admit(&sid(n), AdmitPolicy::MayTakeSlot, LEASE, None)
                .await
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Admission::Admitted { new: true, .. } => admitted += 1,
            Admission::Refused(Refusal::AtLimit { active }) => {
                assert_eq!(active, 50);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, refused), (50, 950));
    let stats = fx.store().stats().await.unwrap();
    assert_eq!(stats.active, 50);
    assert_eq!(stats.started, 50);
    assert_eq!(stats.rejected_max_concurrent, 950);
    if let Some(server) = &fx.redis {
        assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "50");
        assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "50");
        assert_eq!(server.cli(&["GET", "calls:stats:started"]).unwrap(), "50");
        assert_eq!(
            server
                .cli(&["GET", "calls:stats:rejected_max_concurrent"])
                .unwrap(),
            "950"
        );
    }
}
suite!(
    limit_is_exact_under_a_race,
    super::thousand_racing_admissions_take_exactly_the_limit
);

async fn readmission_and_double_release_count_once<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(2), 1).await;
    let store = fx.store();
    let a = sid(1);
    assert_eq!(
        take(store, &a, LEASE).await,
        Admission::Admitted {
            new: true,
            active: 1
        }
    );
    assert_eq!(
        take(store, &a, LEASE).await,
        Admission::Admitted {
            new: false,
            active: 1
        }
    );
    assert_eq!(store.stats().await.unwrap().started, 1);

    assert!(store.release(&a, EndReason::Stop).await.unwrap());
    assert!(!store.release(&a, EndReason::Stop).await.unwrap());
    assert!(
        !store
            .release(&sid(99), EndReason::StatusCallback)
            .await
            .unwrap()
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (0, 1));

    // Freed slots are usable again, up to the limit and no further.
    for n in 2..4 {
        assert!(take(store, &sid(n), LEASE).await.is_admitted());
    }
    assert_eq!(
        take(store, &sid(4), LEASE).await,
        Admission::Refused(Refusal::AtLimit { active: 2 })
    );
}
suite!(
    readmit_and_release_are_idempotent,
    super::readmission_and_double_release_count_once
);

async fn existing_only_refreshes_but_never_takes<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    assert_eq!(
        store
            .admit(&sid(1), AdmitPolicy::ExistingOnly, LEASE, None)
            .await
            .unwrap(),
        Admission::Refused(Refusal::NoSlotHeld)
    );
    take(store, &sid(1), Duration::from_millis(300)).await;
    assert_eq!(
        store
            .admit(&sid(1), AdmitPolicy::ExistingOnly, LEASE, None)
            .await
            .unwrap(),
        Admission::Admitted {
            new: false,
            active: 1
        }
    );
    // The refresh extended the short reservation lease to the long one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reclaim(store).await, Vec::<String>::new());
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.active, stats.started, stats.rejected_max_concurrent),
        (1, 1, 0)
    );
}
async fn activation_replaces_a_long_reservation_with_the_lease<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    take(store, &sid(1), LEASE).await;
    // The stream starts: its short lease, not the 30 s reservation, now governs the slot, so a
    // crashed replica's call frees within the lease.
    store
        .admit(
            &sid(1),
            AdmitPolicy::ExistingOnly,
            Duration::from_millis(200),
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(reclaim(store).await, vec![sid(1).to_string()]);
    assert_eq!(store.stats().await.unwrap().active, 0);
}
/// `started` counts calls, not slots: a call whose reservation lapsed and that comes back (its
/// webhook retried, or its stream late) takes a slot again without counting as started again.
async fn started_counts_each_call_once<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    let short = Duration::from_millis(100);
    for call in [sid(1), sid(2)] {
        let state = CallState::reserved(call.as_str(), "r1");
        let admission = store
            .admit(&call, AdmitPolicy::MayTakeSlot, short, Some(&state))
            .await
            .unwrap();
        assert!(
            matches!(admission, Admission::Admitted { new: true, .. }),
            "{admission:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(reclaim(store).await.len(), 2);
    // Call 1's webhook is retried after its reservation lapsed; call 2's stream comes late.
    let state = CallState::reserved(sid(1).as_str(), "r1");
    let again = store
        .admit(&sid(1), AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
        .await
        .unwrap();
    assert!(
        matches!(again, Admission::Admitted { new: false, .. }),
        "{again:?}"
    );
    match start(store, &sid(2), "late", AdmitPolicy::MayTakeSlot, LEASE).await {
        StreamAdmission::Started { new_slot, .. } => assert!(!new_slot),
        other => panic!("{other:?}"),
    }
    // A call never admitted before is counted.
    assert!(matches!(
        take(store, &sid(3), LEASE).await,
        Admission::Admitted { new: true, .. }
    ));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (3, 3));
}
suite!(started_once, super::started_counts_each_call_once);

suite!(
    activation_sets_the_lease,
    super::activation_replaces_a_long_reservation_with_the_lease
);

suite!(
    existing_only_policy,
    super::existing_only_refreshes_but_never_takes
);

async fn lapsed_leases_are_reclaimed<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(1), 1).await;
    let store = fx.store();
    let reserved = sid(1);
    store
        .write_state(&CallState::reserved(reserved.as_str(), "r1"))
        .await
        .unwrap();
    take(store, &reserved, Duration::from_millis(200)).await;
    assert_eq!(
        take(store, &sid(2), LEASE).await,
        Admission::Refused(Refusal::AtLimit { active: 1 })
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The next admission reclaims the reservation that never became a stream.
    assert_eq!(
        take(store, &sid(2), LEASE).await,
        Admission::Admitted {
            new: true,
            active: 1
        }
    );
    let state = store.read_state(&reserved).await.unwrap().unwrap();
    assert_eq!(state.status, CallStatus::Ended);
    assert_eq!(state.end_reason, Some(EndReason::LeaseExpired));
    assert!(state.ended_at.is_some());

    // The tick's reclaim does the same with no new traffic.
    store.release(&sid(2), EndReason::Stop).await.unwrap();
    take(store, &sid(3), Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(reclaim(store).await, vec![sid(3).to_string()]);
    assert_eq!(store.stats().await.unwrap().active, 0);
}
suite!(lease_lapse, super::lapsed_leases_are_reclaimed);

async fn renewal_keeps_live_calls_and_readds_lost_ones<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(1), 1).await;
    let store = fx.store();
    let live = sid(1);
    take(store, &live, LEASE).await;
    assert!(matches!(
        start(
            store,
            &live,
            "token-1",
            AdmitPolicy::ExistingOnly,
            Duration::from_millis(200)
        )
        .await,
        StreamAdmission::Started {
            new_slot: false,
            ..
        }
    ));
    let mut state = CallState::reserved(live.as_str(), "r1");
    state.status = CallStatus::Active;
    state.frames_in = 42;
    let lost = sid(2);
    let batch = batch(
        Duration::from_secs(5),
        vec![
            (live.clone(), "token-1", Some(state.clone())),
            // A call this replica serves whose slot vanished: re-added even over the limit.
            (lost.clone(), "token-2", None),
        ],
    );
    let report = store.renew(&batch).await.unwrap();
    assert_eq!(report.active, 2);
    assert_eq!(report.readded, vec![lost.to_string()]);
    assert!(report.lock_lost.is_empty());
    assert_eq!(
        store.read_state(&live).await.unwrap().unwrap().frames_in,
        42
    );

    // Over the limit nothing new gets in, and the renewed lease outlives the original one.
    assert_eq!(
        take(store, &sid(3), LEASE).await,
        Admission::Refused(Refusal::AtLimit { active: 2 })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(reclaim(store).await.is_empty());

    // The re-added call's vanished lock was re-taken by its renewal: another stream is refused.
    assert_eq!(
        start(store, &lost, "token-3", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::LockedBy("token-2".into())
    );
    // A lock another owner holds is reported and that call's state is not written.
    let mut foreign = batch.clone();
    foreign.calls[0].lock_token = "someone-else".into();
    state.frames_in = 7;
    foreign.calls[0].state = Some(state);
    let report = store.renew(&foreign).await.unwrap();
    assert_eq!(report.lock_lost, vec![live.to_string()]);
    assert_eq!(
        store.read_state(&live).await.unwrap().unwrap().frames_in,
        42
    );
}
suite!(
    renewal,
    super::renewal_keeps_live_calls_and_readds_lost_ones
);

async fn lock_has_one_owner<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 2).await;
    let (a, b) = (fx.stores[0].as_ref(), fx.stores[1].as_ref());
    let call = sid(7);
    let mut webhook = CallState::reserved(call.as_str(), "r0");
    webhook.from = Some("+15550100".into());
    webhook.to = Some("+15550199".into());
    webhook.account_sid = Some("AC1".into());
    let reserved = a
        .admit(&call, AdmitPolicy::MayTakeSlot, LEASE, Some(&webhook))
        .await
        .unwrap();
    assert!(reserved.is_admitted());

    // The start takes lock and slot together and keeps what the webhook wrote.
    let StreamAdmission::Started {
        new_slot, state, ..
    } = start(a, &call, "A", AdmitPolicy::ExistingOnly, LEASE).await
    else {
        panic!("the first stream starts");
    };
    assert!(!new_slot, "the reservation became the live slot");
    assert_eq!(state.status, CallStatus::Active);
    assert_eq!(state.stream_sid.as_deref(), Some("MZA"));
    assert_eq!(state.created_at, webhook.created_at);
    assert_eq!(
        (state.from.as_deref(), state.to.as_deref()),
        (Some("+15550100"), Some("+15550199"))
    );
    assert_eq!(state.account_sid.as_deref(), Some("AC1"));
    let state = *state;
    assert_eq!(b.read_state(&call).await.unwrap(), Some(state.clone()));
    // The same stream again is re-entrant; another is refused and changes nothing.
    assert!(matches!(
        start(a, &call, "A", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::Started { .. }
    ));
    assert_eq!(
        start(b, &call, "B", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::LockedBy("A".into())
    );
    let mut ended_b = state.clone();
    ended_b.end(EndReason::Stop);
    assert_eq!(
        b.end_stream(&call, "B", &ended_b).await.unwrap(),
        StreamEnd::LockedBy("A".into())
    );
    assert_eq!(b.read_state(&call).await.unwrap(), Some(state.clone()));
    assert_eq!(b.stats().await.unwrap().active, 1);

    // The owner's end writes the final state, frees the slot and the lock, once.
    let mut ended = state.clone();
    ended.frames_in = 9;
    ended.end(EndReason::Stop);
    assert_eq!(
        a.end_stream(&call, "A", &ended).await.unwrap(),
        StreamEnd::Ended { freed: true }
    );
    assert_eq!(
        a.end_stream(&call, "A", &ended).await.unwrap(),
        StreamEnd::Ended { freed: false }
    );
    assert_eq!(a.read_state(&call).await.unwrap(), Some(ended));
    assert_eq!(a.stats().await.unwrap().active, 0);

    // Lock and slot are free for a new stream; a refused start takes neither.
    let fx = make(config(1), 1).await;
    let store = fx.store();
    assert!(take(store, &sid(1), LEASE).await.is_admitted());
    assert_eq!(
        start(store, &call, "C", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::Refused(Refusal::AtLimit { active: 1 })
    );
    assert_eq!(store.read_state(&call).await.unwrap(), None);
    store.release(&sid(1), EndReason::Stop).await.unwrap();
    assert!(matches!(
        start(store, &call, "D", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::Started { new_slot: true, .. }
    ));
}
suite!(locks, super::lock_has_one_owner);

async fn state_round_trips_and_release_ends_it<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    let call = sid(3);
    assert_eq!(store.read_state(&call).await.unwrap(), None);
    let mut state = CallState::reserved(call.as_str(), "r1");
    state
        .custom_parameters
        .insert("tenant".into(), "acme".into());
    state.dtmf = "12#".into();
    state.marks = vec!["greeting".into()];
    store.write_state(&state).await.unwrap();
    assert_eq!(store.read_state(&call).await.unwrap(), Some(state.clone()));

    take(store, &call, LEASE).await;
    assert!(
        store
            .release(&call, EndReason::StatusCallback)
            .await
            .unwrap()
    );
    let ended = store.read_state(&call).await.unwrap().unwrap();
    assert_eq!(ended.status, CallStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::StatusCallback));
    // A later release keeps the first reason.
    store.release(&call, EndReason::Disconnected).await.unwrap();
    let again = store.read_state(&call).await.unwrap().unwrap();
    assert_eq!(again.end_reason, Some(EndReason::StatusCallback));
    assert_eq!(again.ended_at, ended.ended_at);
}
suite!(state, super::state_round_trips_and_release_ends_it);

async fn a_webhook_after_the_call_ended_takes_no_slot<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    let call = sid(4);
    let state = CallState::reserved(call.as_str(), "r1");
    let admit = || store.admit(&call, AdmitPolicy::MayTakeSlot, LEASE, Some(&state));
    assert!(admit().await.unwrap().is_admitted());
    assert!(store.release(&call, EndReason::Stop).await.unwrap());
    // The retry finds the final state: no slot, no second `started`, the state stays ended.
    assert_eq!(admit().await.unwrap(), Admission::Refused(Refusal::Ended));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (0, 1));
    let kept = store.read_state(&call).await.unwrap().unwrap();
    assert_eq!(kept.end_reason, Some(EndReason::Stop));

    // A reservation that lapsed (its stream never came) may be tried again.
    let lapsed = sid(5);
    let mut lapsed_state = CallState::reserved(lapsed.as_str(), "r1");
    lapsed_state.end(EndReason::LeaseExpired);
    store.write_state(&lapsed_state).await.unwrap();
    let retried = CallState::reserved(lapsed.as_str(), "r1");
    assert!(
        store
            .admit(&lapsed, AdmitPolicy::MayTakeSlot, LEASE, Some(&retried))
            .await
            .unwrap()
            .is_admitted()
    );
}
suite!(
    ended_calls,
    super::a_webhook_after_the_call_ended_takes_no_slot
);

/// How long a handed-over call keeps its slot in the hand-over suite (`RESERVATION_SECS`).
const HOLD: Duration = Duration::from_millis(1500);

/// A stream of `call_sid` in tenant `acme` started with `token` (a continuation with `resumed`).
async fn start_resumed(
    store: &dyn CallStore,
    call_sid: &CallSid,
    token: &str,
    lease: Duration,
    resumed: Option<u32>,
) -> StreamAdmission {
    let mut fresh = CallState::reserved(call_sid.as_str(), "r1");
    fresh.status = CallStatus::Active;
    fresh.stream_sid = Some(format!("MZ{token}"));
    fresh.tenant = Some("acme".into());
    // As the core writes it: a continuation counts the grant it takes.
    fresh.resumes = resumed.unwrap_or(0);
    store
        .start_stream(
            call_sid,
            token,
            AdmitPolicy::MayTakeSlot,
            lease,
            &fresh,
            resumed.into(),
        )
        .await
        .unwrap()
}

/// The stream of `call_sid` with `token` ends with `reason`.
async fn end_as(
    store: &dyn CallStore,
    call_sid: &CallSid,
    token: &str,
    reason: EndReason,
) -> StreamEnd {
    let mut last = CallState::reserved(call_sid.as_str(), "r1");
    last.status = CallStatus::Active;
    last.tenant = Some("acme".into());
    last.end(reason);
    store.end_stream(call_sid, token, &last).await.unwrap()
}

/// Live slots, cluster-wide and of tenant `acme`.
async fn counts(store: &dyn CallStore) -> (u64, u64) {
    let (stats, tenants) = store.snapshot(true).await.unwrap();
    (stats.active, tenants.get("acme").map_or(0, |t| t.active))
}

/// docs/reference.md#hand-over: a stream that ends in a way that continues keeps its call's slot
/// (and its tenant's) until the continuation takes it, a final status callback frees it, or
/// `RESERVATION_SECS` pass; a grant keeps a dead replica's slot that long from the grant. At no
/// point can a new call take the place of a caller being handed over.
async fn a_handed_over_call_keeps_its_slot<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(
        StoreConfig {
            reservation: HOLD,
            ..config(1)
        },
        1,
    )
    .await;
    let store = fx.store();
    let (call, newcomer) = (sid(1), sid(2));
    let refused = Admission::Refused(Refusal::AtLimit { active: 1 });

    for reason in [
        EndReason::Disconnected,
        EndReason::DrainTimeout,
        EndReason::LockLost,
    ] {
        // Continued: the slot waits, the continuation takes it back (no second slot).
        assert!(take_for(store, &call, "acme", LEASE).await.is_admitted());
        assert!(matches!(
            start_resumed(store, &call, "A", LEASE, None).await,
            StreamAdmission::Started { .. }
        ));
        assert_eq!(end_as(store, &call, "A", reason).await, StreamEnd::Held);
        assert_eq!(counts(store).await, (1, 1), "{reason:?}");
        assert_eq!(take(store, &newcomer, LEASE).await, refused, "{reason:?}");
        let Ok(ResumeGrant::Granted { resumed }) = store.grant_resume(&call, 10, None).await else {
            panic!("{reason:?}: a continuation is granted");
        };
        assert_eq!(take(store, &newcomer, LEASE).await, refused, "{reason:?}");
        match start_resumed(store, &call, "B", LEASE, Some(resumed)).await {
            StreamAdmission::Started {
                took_over, active, ..
            } => assert!(took_over && active == 1, "{reason:?}"),
            other => panic!("{reason:?}: {other:?}"),
        }
        assert_eq!(take(store, &newcomer, LEASE).await, refused, "{reason:?}");
        // The call over for good: its slot is free at once.
        assert_eq!(
            end_as(store, &call, "B", EndReason::Stop).await,
            StreamEnd::Ended { freed: true }
        );
        assert_eq!(counts(store).await, (0, 0), "{reason:?}");
        // The next round starts from a new call's state.
        store
            .write_state(&CallState::reserved(call.as_str(), "r1"))
            .await
            .unwrap();
    }

    // A final status callback frees the held slot.
    let held = sid(3);
    take_for(store, &held, "acme", LEASE).await;
    start_resumed(store, &held, "C", LEASE, None).await;
    assert_eq!(
        end_as(store, &held, "C", EndReason::Disconnected).await,
        StreamEnd::Held
    );
    assert!(
        store
            .release(&held, EndReason::StatusCallback)
            .await
            .unwrap()
    );
    assert_eq!(counts(store).await, (0, 0));

    // No continuation within RESERVATION_SECS: the slot lapses like a reservation.
    let dropped = sid(4);
    take_for(store, &dropped, "acme", LEASE).await;
    start_resumed(store, &dropped, "D", LEASE, None).await;
    assert_eq!(
        end_as(store, &dropped, "D", EndReason::DrainTimeout).await,
        StreamEnd::Held
    );
    tokio::time::sleep(HOLD / 2).await;
    assert_eq!(take(store, &newcomer, LEASE).await, refused);
    tokio::time::sleep(HOLD).await;
    assert!(take(store, &newcomer, LEASE).await.is_admitted());
    assert_eq!(counts(store).await, (1, 0));
    store.release(&newcomer, EndReason::Stop).await.unwrap();

    // A dead replica's call keeps its slot on its lease; a grant made meanwhile keeps it
    // RESERVATION_SECS from the grant, past the lease.
    let orphan = sid(5);
    take_for(store, &orphan, "acme", LEASE).await;
    let short = HOLD / 3;
    start_resumed(store, &orphan, "E", short, None).await;
    assert!(matches!(
        store.grant_resume(&orphan, 10, None).await.unwrap(),
        ResumeGrant::Granted { resumed: 1 }
    ));
    tokio::time::sleep(short * 2).await;
    assert_eq!(take(store, &newcomer, LEASE).await, refused);
    assert_eq!(counts(store).await, (1, 1));
    tokio::time::sleep(HOLD).await;
    assert!(take(store, &newcomer, LEASE).await.is_admitted());
    assert_eq!(counts(store).await, (1, 0));

    // An ending that does not continue frees the slot at once, as before.
    store.release(&newcomer, EndReason::Stop).await.unwrap();
    let stopped = sid(6);
    take_for(store, &stopped, "acme", LEASE).await;
    start_resumed(store, &stopped, "F", LEASE, None).await;
    assert_eq!(
        end_as(store, &stopped, "F", EndReason::IdleTimeout).await,
        StreamEnd::Ended { freed: true }
    );
    assert_eq!(counts(store).await, (0, 0));
}
suite!(hand_over, super::a_handed_over_call_keeps_its_slot);

/// docs/reference.md#stream-token: a start without its call's token may only be a new admission.
/// Claiming a reserved call, a live one, a handed-over one or a continuation, it is refused and
/// changes nothing: slot, lock and state as they were.
async fn an_unbound_start_takes_no_call<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    let unbound = |resumed: Option<u32>| StreamClaim {
        resumed,
        bound: false,
    };
    let attempt = |call: CallSid, token: &'static str, claim: StreamClaim| {
        let mut fresh = CallState::reserved(call.as_str(), "r9");
        fresh.status = CallStatus::Active;
        fresh.stream_sid = Some("MZforged".into());
        async move {
            store
                .start_stream(&call, token, AdmitPolicy::MayTakeSlot, LEASE, &fresh, claim)
                .await
                .unwrap()
        }
    };
    // A call admitted by a replica that gave no token (tokens were off, or an older version
    // during a roll): its streams cannot show one, and are not refused for it.
    let untokened = sid(3);
    let webhook = CallState::reserved(untokened.as_str(), "r1");
    store
        .admit(&untokened, AdmitPolicy::MayTakeSlot, LEASE, Some(&webhook))
        .await
        .unwrap();
    assert!(matches!(
        attempt(untokened.clone(), "old-twiml", unbound(None)).await,
        StreamAdmission::Started {
            new_slot: false,
            ..
        }
    ));

    let call = sid(1);
    let mut webhook = CallState::reserved(call.as_str(), "r1");
    webhook.stream_token = true;
    assert!(
        store
            .admit(&call, AdmitPolicy::MayTakeSlot, LEASE, Some(&webhook))
            .await
            .unwrap()
            .is_admitted()
    );
    let before = (
        store.read_state(&call).await.unwrap(),
        store.stats().await.unwrap(),
    );
    // The reserved call, and any continuation of it.
    for claim in [unbound(None), unbound(Some(0)), unbound(Some(1))] {
        assert_eq!(
            attempt(call.clone(), "forged", claim).await,
            StreamAdmission::Unbound
        );
    }
    assert_eq!(
        (
            store.read_state(&call).await.unwrap(),
            store.stats().await.unwrap()
        ),
        before,
        "nothing changed"
    );
    // The real stream starts: the forged one took no lock.
    assert!(matches!(
        start(store, &call, "real", AdmitPolicy::MayTakeSlot, LEASE).await,
        StreamAdmission::Started {
            new_slot: false,
            ..
        }
    ));
    // A live call, then a handed-over one with its continuation granted: still refused.
    assert_eq!(
        attempt(call.clone(), "forged", unbound(None)).await,
        StreamAdmission::Unbound
    );
    let mut lost = store.read_state(&call).await.unwrap().unwrap();
    lost.end(EndReason::Disconnected);
    assert_eq!(
        store.end_stream(&call, "real", &lost).await.unwrap(),
        StreamEnd::Held
    );
    assert!(matches!(
        store.grant_resume(&call, 2, None).await.unwrap(),
        ResumeGrant::Granted { resumed: 1 }
    ));
    let granted = store.read_state(&call).await.unwrap();
    for claim in [unbound(None), unbound(Some(1))] {
        assert_eq!(
            attempt(call.clone(), "forged", claim).await,
            StreamAdmission::Unbound
        );
    }
    assert_eq!(store.read_state(&call).await.unwrap(), granted);
    assert_eq!(
        store.stats().await.unwrap().active,
        2,
        "the held slot and the untokened call's"
    );
    // The grant's own (bound) stream takes it.
    assert!(matches!(
        attempt(call.clone(), "continued", Some(1).into()).await,
        StreamAdmission::Started {
            took_over: true,
            ..
        }
    ));
    // A call holding no slot: an unbound start is a new admission under the cap.
    assert!(matches!(
        attempt(sid(2), "outbound", unbound(None)).await,
        StreamAdmission::Started { new_slot: true, .. }
    ));
}
suite!(stream_token, super::an_unbound_start_takes_no_call);

/// The live stream of `call_sid` with `token` ends with `reason`, its final state the stored one
/// ended (as a replica's is: what the stream started with, counters and all).
async fn end_stored(
    store: &dyn CallStore,
    call_sid: &CallSid,
    token: &str,
    reason: EndReason,
) -> StreamEnd {
    let mut last = store.read_state(call_sid).await.unwrap().unwrap();
    last.end(reason);
    store.end_stream(call_sid, token, &last).await.unwrap()
}

/// docs/reference.md#after-stream, #resume-limit: an after-stream request names the stream it
/// follows, and only the one for the call's current stream spends a continuation (a replay
/// spends nothing and writes nothing); a stream without `resumed` never resets the count.
async fn continuations_are_spent_once_per_stream<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(5), 1).await;
    let store = fx.store();
    let call = sid(1);
    take_for(store, &call, "acme", LEASE).await;
    start_resumed(store, &call, "s0", LEASE, None).await;
    end_stored(store, &call, "s0", EndReason::Disconnected).await;
    assert_eq!(
        store.grant_resume(&call, 2, Some(0)).await.unwrap(),
        ResumeGrant::Granted { resumed: 1 }
    );
    let granted = store.read_state(&call).await.unwrap();
    // The request for stream 0 replayed: nothing spent, nothing written.
    assert_eq!(
        store.grant_resume(&call, 2, Some(0)).await.unwrap(),
        ResumeGrant::NotCurrent { current: 1 }
    );
    assert_eq!(store.read_state(&call).await.unwrap(), granted);
    assert!(matches!(
        start_resumed(store, &call, "s1", LEASE, Some(1)).await,
        StreamAdmission::Started {
            took_over: true,
            ..
        }
    ));
    end_stored(store, &call, "s1", EndReason::Disconnected).await;
    for replayed in [Some(0), Some(7)] {
        assert!(matches!(
            store.grant_resume(&call, 2, replayed).await.unwrap(),
            ResumeGrant::NotCurrent { current: 1 }
        ));
    }
    assert_eq!(
        store.grant_resume(&call, 2, Some(1)).await.unwrap(),
        ResumeGrant::Granted { resumed: 2 }
    );
    start_resumed(store, &call, "s2", LEASE, Some(2)).await;
    end_stored(store, &call, "s2", EndReason::Stop).await;
    // The budget of 2 is spent. A stream without `resumed` for the same call starts (a new
    // admission), and keeps the count: its loss is not continued.
    match start_resumed(store, &call, "fresh", LEASE, None).await {
        StreamAdmission::Started { state, .. } => assert_eq!(state.resumes, 2),
        other => panic!("{other:?}"),
    }
    end_stored(store, &call, "fresh", EndReason::Disconnected).await;
    assert_eq!(
        store.grant_resume(&call, 2, None).await.unwrap(),
        ResumeGrant::LimitReached
    );
}
suite!(spent_once, super::continuations_are_spent_once_per_stream);

/// A webhook's admission for `call_sid` in `tenant`, as the core makes it (the tenant travels in
/// the initial state).
async fn take_for(
    store: &dyn CallStore,
    call_sid: &CallSid,
    tenant: &str,
    lease: Duration,
) -> Admission {
    let mut state = CallState::reserved(call_sid.as_str(), "r1");
    state.tenant = Some(tenant.to_owned());
    store
        .admit(call_sid, AdmitPolicy::MayTakeSlot, lease, Some(&state))
        .await
        .unwrap()
}

async fn tenant_caps_stand_beside_the_global_one<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(
        StoreConfig {
            default_tenant_limit: Some(3),
            ..config(10)
        },
        1,
    )
    .await;
    let store = fx.store();
    // acme's own cap is 2 (in Redis; in-process, every tenant has the default); beta has the
    // default, 3. Neither reaches the global 10.
    let acme_cap = if fx.set_tenant_limit("acme", 2).await {
        2
    } else {
        3
    };
    let acme: Vec<CallSid> = (100..105).map(sid).collect();
    let beta: Vec<CallSid> = (200..205).map(sid).collect();

    for call in &acme[..acme_cap] {
        assert!(take_for(store, call, "acme", LEASE).await.is_admitted());
    }
    assert!(matches!(
        take_for(store, &acme[acme_cap], "acme", LEASE).await,
        Admission::Refused(Refusal::TenantAtLimit { .. })
    ));
    // A retried webhook of an admitted call still gets in: it holds its slot.
    assert!(take_for(store, &acme[1], "acme", LEASE).await.is_admitted());
    for call in &beta[..3] {
        assert!(take_for(store, call, "beta", LEASE).await.is_admitted());
    }
    assert!(!take_for(store, &beta[3], "beta", LEASE).await.is_admitted());
    let (stats, tenants) = store.snapshot(true).await.unwrap();
    assert_eq!(
        (
            stats.active,
            stats.rejected_tenant_limit,
            stats.rejected_max_concurrent
        ),
        (acme_cap as u64 + 3, 2, 0)
    );
    assert_eq!(
        (tenants["acme"].active, tenants["acme"].limit),
        (acme_cap as u64, Some(acme_cap as u64))
    );
    assert_eq!(
        (tenants["beta"].active, tenants["beta"].limit),
        (3, Some(3))
    );

    // A release frees the tenant's slot exactly once; a second release changes nothing.
    assert!(store.release(&acme[0], EndReason::Stop).await.unwrap());
    assert!(!store.release(&acme[0], EndReason::Stop).await.unwrap());
    assert!(
        take_for(store, &acme[acme_cap + 1], "acme", LEASE)
            .await
            .is_admitted()
    );
    assert!(
        !take_for(store, &acme[acme_cap], "acme", LEASE)
            .await
            .is_admitted()
    );

    // A raised cap is honoured from the next admission (in-process, a release makes the room
    // instead); a lapsed slot leaves its tenant too.
    if !fx.set_tenant_limit("acme", 3).await {
        store.release(&acme[1], EndReason::Stop).await.unwrap();
    }
    assert!(
        take_for(store, &acme[acme_cap], "acme", Duration::from_millis(50))
            .await
            .is_admitted()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    reclaim(store).await;
    let (stats, tenants) = store.snapshot(true).await.unwrap();
    assert_eq!(stats.active, 5);
    assert_eq!(tenants["acme"].active, 2);
}
suite!(tenant_caps, super::tenant_caps_stand_beside_the_global_one);

// ---- Redis only: TTLs, restarts and garbage in the key space.

fn redis_config(limit: u64) -> StoreConfig {
    StoreConfig {
        limit,
        recovery_holdoff: Duration::ZERO,
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn redis_ttls_follow_the_contract() {
    let fx = redis(redis_config(5), 1).await;
    let server = fx.redis.as_ref().unwrap();
    let call = sid(1);
    start(fx.store(), &call, "t", AdmitPolicy::MayTakeSlot, LEASE).await;
    let state_ttl: i64 = server
        .cli(&["TTL", &format!("calls:state:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    let lock_ttl: i64 = server
        .cli(&["TTL", &format!("calls:lock:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&state_ttl), "state TTL {state_ttl}");
    assert!((55..=60).contains(&lock_ttl), "lock TTL {lock_ttl}");

    let custom = redis(
        StoreConfig {
            state_ttl: Duration::from_secs(120),
            lock_ttl: Duration::from_secs(9),
            ..redis_config(5)
        },
        1,
    )
    .await;
    start(custom.store(), &call, "t", AdmitPolicy::MayTakeSlot, LEASE).await;
    let server = custom.redis.as_ref().unwrap();
    let state_ttl: i64 = server
        .cli(&["TTL", &format!("calls:state:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    let lock_ttl: i64 = server
        .cli(&["PTTL", &format!("calls:lock:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    assert!((115..=120).contains(&state_ttl), "state TTL {state_ttl}");
    assert!((8000..=9000).contains(&lock_ttl), "lock PTTL {lock_ttl}");
}

#[tokio::test]
async fn redis_renewal_writes_heartbeat_and_refreshes_state_ttl() {
    let fx = redis(redis_config(5), 1).await;
    let server = fx.redis.as_ref().unwrap();
    let call = sid(1);
    take(fx.store(), &call, LEASE).await;
    fx.store()
        .write_state(&CallState::reserved(call.as_str(), "r1"))
        .await
        .unwrap();
    server
        .cli(&["EXPIRE", &format!("calls:state:{call}"), "5"])
        .unwrap();
    fx.store()
        .renew(&batch(LEASE, vec![(call.clone(), "t", None)]))
        .await
        .unwrap();
    let ttl: i64 = server
        .cli(&["TTL", &format!("calls:state:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 3500, "state TTL not refreshed: {ttl}");

    // The heartbeat as the lifecycle writes it: its TTL is three ticks of this replica.
    let store: Arc<dyn CallStore> = Arc::new(
        RedisStore::connect(&server.url(), redis_config(5))
            .await
            .unwrap(),
    );
    let calls = Calls::new(
        CallsConfig {
            replica_id: "calls-2".into(),
            max_concurrent_calls: 5,
            reservation: LEASE,
            call_lease: LEASE,
            renew_interval: Duration::from_secs(7),
            tenant_key: calls_core::tenant::TenantKey::To,
            default_tenant_limit: Some(3),
            resume_limit: 2,
            wait: None,
            stream_tokens: false,
        },
        store,
        Arc::new(NoEvents),
    );
    calls.renew(true).await.unwrap();
    let heartbeat: serde_json::Value =
        serde_json::from_str(&server.cli(&["GET", "calls:replica:calls-2"]).unwrap()).unwrap();
    assert_eq!(heartbeat["id"], "calls-2");
    assert_eq!(heartbeat["calls_active"], 0);
    assert_eq!(heartbeat["draining"], true);
    assert_eq!(heartbeat["max_concurrent_calls"], 5);
    assert_eq!(heartbeat["renew_interval_ms"], 7000);
    // The tenant settings the command line judges tenants by.
    assert_eq!(heartbeat["tenant_key"], "to");
    assert_eq!(heartbeat["default_tenant_limit"], 3);
    assert_eq!(heartbeat["started_at"], calls.started_at());
    let hb_ttl: i64 = server
        .cli(&["PTTL", "calls:replica:calls-2"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (20_000..=21_000).contains(&hb_ttl),
        "heartbeat PTTL {hb_ttl}, not three 7 s ticks"
    );
}

#[tokio::test]
async fn redis_restarted_empty_reloads_scripts_and_admission_goes_on() {
    let mut fx = redis(redis_config(5), 1).await;
    let store = fx.stores[0].clone();
    assert!(take(store.as_ref(), &sid(1), LEASE).await.is_admitted());
    let server = fx.redis.as_mut().unwrap();
    let hashes = RedisStore::script_hashes();
    let exists = |server: &RedisServer| {
        let mut args = vec!["SCRIPT", "EXISTS"];
        args.extend(hashes.iter().map(String::as_str));
        server.cli(&args).unwrap()
    };
    let all = |bit: &str| vec![bit; hashes.len()].join("\n");
    assert_eq!(
        exists(server),
        all("1"),
        "every script loaded at the first call"
    );
    server.restart_empty().unwrap();
    assert_eq!(exists(server), all("0"), "a restart flushes the scripts");

    // The connection manager reconnects; the first call after the restart may see the dropped
    // connection, so allow a couple of attempts within a second.
    let mut outcome = None;
    for _ in 0..20 {
        match store
            .admit(&sid(2), AdmitPolicy::MayTakeSlot, LEASE, None)
            .await
        {
            Ok(admission) => {
                outcome = Some(admission);
                break;
            }
            Err(err) => {
                assert!(err.is_unavailable(), "unexpected error {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        outcome,
        Some(Admission::Admitted {
            new: true,
            active: 1
        })
    );
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "1");
    assert_ne!(server.cli(&["GET", "calls:epoch"]).unwrap(), "");
    assert_eq!(exists(server), all("1"), "reloaded after the reconnect");
}

#[tokio::test]
async fn redis_data_loss_holds_admissions_until_live_calls_reregister() {
    let holdoff = Duration::from_millis(600);
    let fx = redis(
        StoreConfig {
            recovery_holdoff: holdoff,
            ..redis_config(2)
        },
        1,
    )
    .await;
    let server = fx.redis.as_ref().unwrap();
    let store = fx.store();
    // A brand-new Redis is not data loss (docs/reference.md#admission): the first admission gets in
    // at once.
    assert_eq!(
        take(store, &sid(1), LEASE).await,
        Admission::Admitted {
            new: true,
            active: 1
        }
    );
    assert!(!reregister_wanted(store).await);

    server.cli(&["FLUSHALL"]).unwrap();
    // Before the holdoff ends the live call re-registers through its renewal; newcomers wait.
    assert_eq!(
        take(store, &sid(2), LEASE).await,
        Admission::Refused(Refusal::Recovering)
    );
    assert!(
        reregister_wanted(store).await,
        "the loss asks for re-registration now"
    );
    let batch = batch(LEASE, vec![(sid(1), "t", None)]);
    assert_eq!(
        store.renew(&batch).await.unwrap().readded,
        vec![sid(1).to_string()]
    );
    assert!(!reregister_wanted(store).await, "asked once");
    tokio::time::sleep(holdoff).await;
    assert!(take(store, &sid(2), LEASE).await.is_admitted());
    assert_eq!(
        take(store, &sid(3), LEASE).await,
        Admission::Refused(Refusal::AtLimit { active: 2 })
    );
}

#[tokio::test]
async fn redis_garbage_gives_typed_errors_and_changes_no_count() {
    let fx = redis(redis_config(5), 1).await;
    let server = fx.redis.as_ref().unwrap();
    let store = fx.store();
    take(store, &sid(1), LEASE).await;

    server
        .cli(&["SET", &format!("calls:state:{}", sid(1)), "{not json"])
        .unwrap();
    let err = store.read_state(&sid(1)).await.unwrap_err();
    assert!(matches!(
        err,
        calls_core::store::StoreError::CorruptState { .. }
    ));
    // Ending a call whose state is corrupt still frees its slot exactly once.
    assert!(store.release(&sid(1), EndReason::Stop).await.unwrap());
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "0");

    // A wrong-type key is an error from the script, not a panic, and nothing is counted.
    server.cli(&["SET", "calls:slots", "oops"]).unwrap();
    let err = store
        .admit(&sid(2), AdmitPolicy::MayTakeSlot, LEASE, None)
        .await
        .unwrap_err();
    assert!(!err.is_unavailable());
    assert_eq!(server.cli(&["GET", "calls:stats:started"]).unwrap(), "1");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "0");
}

#[tokio::test]
async fn redis_unreachable_is_a_timely_unavailable_error() {
    let mut fx = redis(
        StoreConfig {
            op_timeout: Duration::from_millis(300),
            ..redis_config(5)
        },
        1,
    )
    .await;
    fx.redis.as_mut().unwrap().stop();
    let started = std::time::Instant::now();
    let err = fx
        .store()
        .admit(&sid(1), AdmitPolicy::MayTakeSlot, LEASE, None)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    fx.redis.as_mut().unwrap().start_again().unwrap();
    let mut ok = false;
    for _ in 0..40 {
        if fx.store().ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "store did not reconnect");
}

/// Retries `op` through the dropped connection right after a Redis restart (bounded).
async fn after_restart<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, calls_core::store::StoreError>>,
{
    for _ in 0..100 {
        match op().await {
            Ok(value) => return value,
            Err(err) => {
                assert!(err.is_unavailable(), "unexpected error {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("the store did not reconnect within 5 s");
}

#[tokio::test]
async fn redis_epoch_replaced_under_a_replica_opens_the_wait() {
    let holdoff = Duration::from_millis(1500);
    let fx = redis(
        StoreConfig {
            recovery_holdoff: holdoff,
            ..redis_config(5)
        },
        2,
    )
    .await;
    let server = fx.redis.as_ref().unwrap();
    let (old, newcomer) = (fx.stores[0].as_ref(), fx.stores[1].as_ref());
    assert!(take(old, &sid(1), LEASE).await.is_admitted());
    server.cli(&["FLUSHALL"]).unwrap();
    // A replica that has seen no epoch finds an empty Redis: it cannot tell a first deploy, so it
    // admits (the residual case, bounded by one tick of the old replicas)...
    assert!(take(newcomer, &sid(2), LEASE).await.is_admitted());
    assert!(!reregister_wanted(newcomer).await);
    // ...and the old replica, finding the epoch replaced, re-registers at once and opens the wait.
    assert_eq!(
        take(old, &sid(3), LEASE).await,
        Admission::Refused(Refusal::Recovering)
    );
    assert!(reregister_wanted(old).await);
    assert_eq!(
        take(newcomer, &sid(4), LEASE).await,
        Admission::Refused(Refusal::Recovering),
        "the wait holds every replica"
    );
    tokio::time::sleep(holdoff).await;
    assert!(take(newcomer, &sid(4), LEASE).await.is_admitted());
    // Nothing asks again once the new epoch is known.
    assert!(take(old, &sid(5), LEASE).await.is_admitted());
    assert!(!reregister_wanted(old).await);
}

/// One tick of a replica serving call `call` alone.
async fn renew_one(store: &dyn CallStore, lease: Duration, call: usize) {
    store
        .renew(&batch(lease, vec![(sid(call), "t", None)]))
        .await
        .unwrap();
}

/// docs/reference.md#admission: the wait is for the whole cluster's loss. Two replicas renew a
/// one-second lease; one stays away longer than a lease while the other goes on: on its return it
/// re-registers, and no one waits. Then neither renews for longer than a lease (Redis out of reach
/// of every replica): whichever script comes first opens the wait.
#[tokio::test]
async fn only_a_cluster_that_renewed_nothing_for_longer_than_a_lease_opens_the_wait() {
    let holdoff = Duration::from_millis(600);
    let lease = Duration::from_secs(1);
    let fx = redis(
        StoreConfig {
            recovery_holdoff: holdoff,
            call_lease: lease,
            ..redis_config(5)
        },
        2,
    )
    .await;
    let (away, staying) = (fx.stores[0].as_ref(), fx.stores[1].as_ref());
    assert!(take(away, &sid(1), lease).await.is_admitted());
    assert!(take(staying, &sid(2), lease).await.is_admitted());
    renew_one(away, lease, 1).await;
    // One replica away for longer than a lease; the other renews every 300 ms meanwhile, and its
    // tick reclaims the lapsed slot.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        renew_one(staying, lease, 2).await;
    }
    let back = take(away, &sid(3), lease).await;
    assert!(
        back.is_admitted(),
        "one replica's loss opened the wait: {back:?}"
    );
    assert!(
        reregister_wanted(away).await,
        "its calls re-register at once"
    );
    assert!(take(staying, &sid(4), lease).await.is_admitted());

    // Now no one renews for longer than a lease: every slot lapses unseen.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let refused = std::time::Instant::now();
    assert_eq!(
        take(staying, &sid(5), lease).await,
        Admission::Refused(Refusal::Recovering)
    );
    assert_eq!(
        take(away, &sid(5), lease).await,
        Admission::Refused(Refusal::Recovering),
        "the wait holds every replica"
    );
    // Polled: admitted once the wait is over.
    let mut admitted = false;
    while refused.elapsed() < Duration::from_secs(5) {
        if take(staying, &sid(5), lease).await.is_admitted() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the wait never ended");
    assert!(
        refused.elapsed() >= holdoff - Duration::from_millis(100),
        "admitted after {:?}, before the wait ended",
        refused.elapsed()
    );
}

#[tokio::test]
async fn redis_restarted_with_its_data_opens_the_wait() {
    let holdoff = Duration::from_millis(600);
    let mut server = RedisServer::start_append_only().unwrap();
    let store = RedisStore::connect(
        &server.url(),
        StoreConfig {
            recovery_holdoff: holdoff,
            ..redis_config(5)
        },
    )
    .await
    .unwrap();
    assert!(take(&store, &sid(1), LEASE).await.is_admitted());
    let epoch = server.cli(&["GET", "calls:epoch"]).unwrap();
    server.stop();
    server.start_again().unwrap();
    assert_eq!(
        server.cli(&["ZCARD", "calls:slots"]).unwrap(),
        "1",
        "data kept"
    );
    assert_eq!(server.cli(&["GET", "calls:epoch"]).unwrap(), epoch);
    // Same epoch, short outage; but the run_id changed: writes of Redis' last moments may be gone.
    let second = sid(2);
    let admission =
        after_restart(|| store.admit(&second, AdmitPolicy::MayTakeSlot, LEASE, None)).await;
    assert_eq!(admission, Admission::Refused(Refusal::Recovering));
    assert!(reregister_wanted(&store).await);
    tokio::time::sleep(holdoff).await;
    assert!(take(&store, &sid(2), LEASE).await.is_admitted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hanging_fails_a_burst_together_not_one_timeout_after_another() {
    let op_timeout = Duration::from_millis(300);
    let fx = redis(
        StoreConfig {
            op_timeout,
            ..redis_config(100)
        },
        1,
    )
    .await;
    let server = fx.redis.as_ref().unwrap();
    let store = fx.stores[0].clone();
    assert!(take(store.as_ref(), &sid(1), LEASE).await.is_admitted());
    let pid = server.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, pid.as_str()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // A stopped redis-server accepts nothing and answers nothing: every call meets the timeout.
    signal("-STOP");
    // The first call times out; the next ones must reconnect and reload the scripts first.
    let err = take_err(store.as_ref(), &sid(2)).await;
    assert!(err.is_unavailable(), "{err}");
    let started = std::time::Instant::now();
    let burst: Vec<_> = (10..60)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .admit(&sid(n), AdmitPolicy::MayTakeSlot, LEASE, None)
                    .await
            })
        })
        .collect();
    for call in burst {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }
    let took = started.elapsed();
    signal("-CONT");
    // One timeout for the burst's own commands and one for the shared reconnect attempt, not
    // fifty in a row.
    assert!(
        took < Duration::from_secs(5),
        "50 refusals took {took:?}, one timeout after another"
    );
    let back = after_restart(|| store.ping()).await;
    assert_eq!(back, ());
}

/// `errorstat_NOSCRIPT` from `INFO errorstats`: how many EVALSHA met a script Redis did not have.
fn noscript_errors(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "errorstats"]).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("errorstat_NOSCRIPT:count="))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_never_meets_noscript_cold_or_after_a_restart() {
    let mut server = RedisServer::start().unwrap();
    let store = Arc::new(
        RedisStore::connect(&server.url(), redis_config(1000))
            .await
            .unwrap(),
    );
    let burst = |range: std::ops::Range<usize>| {
        let tasks: Vec<_> = range
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { take(store.as_ref(), &sid(n), LEASE).await })
            })
            .collect();
        async move {
            for task in tasks {
                assert!(task.await.unwrap().is_admitted());
            }
        }
    };
    burst(0..300).await;
    // Concurrent admissions share scripts (one per batch): at most one EVALSHA each.
    let sent = evalsha_calls(&server);
    assert!(
        (1..=300).contains(&sent),
        "{sent} EVALSHA for 300 admissions"
    );
    assert_eq!(noscript_errors(&server), 0);

    server.restart_empty().unwrap();
    after_restart(|| store.ping()).await;
    burst(1000..1300).await;
    assert_eq!(noscript_errors(&server), 0, "scripts reloaded on reconnect");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "300");
}

#[tokio::test]
async fn an_admission_after_a_script_flush_behind_its_back_loads_the_script_and_runs() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), redis_config(10))
        .await
        .unwrap();
    assert!(take(&store, &sid(1), LEASE).await.is_admitted());
    // Same connection, no reconnect: only the NOSCRIPT answer can tell the replica.
    server.cli(&["SCRIPT", "FLUSH"]).unwrap();
    assert!(take(&store, &sid(2), LEASE).await.is_admitted());
    assert_eq!(noscript_errors(&server), 1, "met once, then loaded");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "2");
}

#[test]
fn bad_call_sids_are_typed_errors() {
    use calls_core::call_sid::CallSidError;
    assert_eq!(CallSid::parse(""), Err(CallSidError::Empty));
    assert!(matches!(
        CallSid::parse(&"A".repeat(200)),
        Err(CallSidError::TooLong(200))
    ));
}

/// A replica with more live calls than one renewal script takes (the store splits the tick into
/// chunks of 100): every call is extended and its state written whichever chunk it falls in, and a
/// call whose lapsed slot an earlier chunk reclaimed is re-added by its own, not ended.
#[tokio::test]
async fn redis_renewal_of_many_calls_keeps_every_one_across_chunks() {
    const CALLS: usize = 250;
    let fx = redis(redis_config(CALLS as u64 + 10), 1).await;
    let server = fx.redis.as_ref().unwrap();
    for n in 1..=CALLS {
        let admitted = start(
            fx.store(),
            &sid(n),
            &format!("t{n}"),
            AdmitPolicy::MayTakeSlot,
            LEASE,
        )
        .await;
        assert!(
            matches!(admitted, StreamAdmission::Started { .. }),
            "call {n}: {admitted:?}"
        );
    }
    // Every lease lapses (a replica paused past its lease): deadlines long past, so the first
    // chunk's reclaim takes all 250 before the later chunks re-add theirs.
    let lapsed: Vec<String> = (1..=CALLS)
        .flat_map(|n| ["1".to_owned(), sid(n).to_string()])
        .collect();
    let mut zadd = vec!["ZADD", "calls:slots", "XX"];
    zadd.extend(lapsed.iter().map(String::as_str));
    assert_eq!(server.cli(&zadd).unwrap(), "0");
    let taken = sid(230);
    server
        .cli(&["SET", &format!("calls:lock:{taken}"), "another-stream"])
        .unwrap();

    let calls = (1..=CALLS)
        .map(|n| {
            let mut state = CallState::reserved(sid(n).as_str(), "r1");
            state.status = CallStatus::Active;
            state.frames_in = n as u64;
            (sid(n), format!("t{n}"), state)
        })
        .collect::<Vec<_>>();
    let report = fx
        .store()
        .renew(&batch(
            LEASE,
            calls
                .iter()
                .map(|(sid, token, state)| (sid.clone(), token.as_str(), Some(state.clone())))
                .collect(),
        ))
        .await
        .unwrap();
    assert_eq!(report.reclaimed.len(), CALLS, "{report:?}");
    assert_eq!(report.readded.len(), CALLS);
    assert_eq!(report.lock_lost, vec![taken.to_string()]);
    assert!(report.lapsed_reservations.is_empty());
    assert_eq!(report.active, CALLS as u64);
    assert_eq!(
        server.cli(&["ZCARD", "calls:slots"]).unwrap(),
        CALLS.to_string()
    );
    assert_eq!(
        server.cli(&["GET", "calls:active_count"]).unwrap(),
        CALLS.to_string()
    );
    for n in [1, 100, 101, 200, 201, 250] {
        let stored: CallState = serde_json::from_str(
            &server
                .cli(&["GET", &format!("calls:state:{}", sid(n))])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(stored.status, CallStatus::Active, "call {n}");
        assert_eq!(
            stored.frames_in, n as u64,
            "call {n}: the renewal's state was not written"
        );
        let ttl: i64 = server
            .cli(&["PTTL", &format!("calls:lock:{}", sid(n))])
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > 0, "call {n}: lock PTTL {ttl}");
    }
    // The taken call's state is the other stream's to write: this replica left it alone.
    let stored: CallState = serde_json::from_str(
        &server
            .cli(&["GET", &format!("calls:state:{taken}")])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.frames_in, 0);
}

/// `cmdstat_evalsha` calls from `INFO commandstats`: how many scripts clients sent.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// `n` webhooks at once on one store: `tenant_of(i)` names the i-th call's tenant, if any.
async fn concurrent_webhooks(
    store: &Arc<RedisStore>,
    range: std::ops::Range<usize>,
    tenant_of: fn(usize) -> Option<String>,
) -> Vec<(usize, Admission)> {
    let tasks: Vec<_> = range
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut state = CallState::reserved(sid(n).as_str(), "r1");
                state.tenant = tenant_of(n);
                let admission = store
                    .admit(&sid(n), AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
                    .await
                    .unwrap();
                (n, admission)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Group commit: concurrent admissions of one store share scripts, and each one is still decided
/// exactly as alone: the cap holds, the counters and the slots agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admissions_of_one_store_share_scripts_and_keep_the_cap_exact() {
    let server = RedisServer::start().unwrap();
    let store = Arc::new(
        RedisStore::connect(&server.url(), redis_config(50))
            .await
            .unwrap(),
    );
    let answers = concurrent_webhooks(&store, 0..200, |_| None).await;
    let admitted = answers.iter().filter(|(_, a)| a.is_admitted()).count();
    let at_limit = answers
        .iter()
        .filter(|(_, a)| matches!(a, Admission::Refused(Refusal::AtLimit { active: 50 })))
        .count();
    assert_eq!((admitted, at_limit), (50, 150));
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "50");
    assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "50");
    assert_eq!(server.cli(&["GET", "calls:stats:started"]).unwrap(), "50");
    assert_eq!(
        server
            .cli(&["GET", "calls:stats:rejected_max_concurrent"])
            .unwrap(),
        "150"
    );
    // Each admitted call's reserved state was written in its batch; no refused call's was.
    for (n, answer) in &answers {
        let state = store.read_state(&sid(*n)).await.unwrap();
        assert_eq!(state.is_some(), answer.is_admitted(), "call {n}");
    }
    let sent = evalsha_calls(&server);
    assert!(
        sent < 200,
        "{sent} EVALSHA for 200 concurrent admissions: no batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admissions_in_one_script_keep_every_tenant_under_its_cap() {
    let server = RedisServer::start().unwrap();
    let store = Arc::new(
        RedisStore::connect(
            &server.url(),
            StoreConfig {
                default_tenant_limit: Some(7),
                ..redis_config(100)
            },
        )
        .await
        .unwrap(),
    );
    cluster_view(&server)
        .set_tenant_limit("t0", Some(3))
        .await
        .unwrap();
    // Ten tenants of 20 calls each, interleaved so every batch mixes them.
    let answers = concurrent_webhooks(&store, 0..200, |n| Some(format!("t{}", n % 10))).await;
    let (_, tenants) = store.snapshot(true).await.unwrap();
    assert_eq!(tenants["t0"].active, 3);
    for t in 1..10 {
        assert_eq!(tenants[&format!("t{t}")].active, 7, "tenant t{t}");
    }
    let admitted = answers.iter().filter(|(_, a)| a.is_admitted()).count();
    let tenant_refused = answers
        .iter()
        .filter(|(_, a)| matches!(a, Admission::Refused(Refusal::TenantAtLimit { .. })))
        .count();
    // 3 + 9 * 7 = 66 under the global 100: every tenant fills exactly its own cap.
    assert_eq!((admitted, tenant_refused), (66, 134));
    assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "66");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "66");
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.rejected_tenant_limit, stats.rejected_max_concurrent),
        (134, 0)
    );
    let sent = evalsha_calls(&server);
    assert!(sent < 200, "{sent} EVALSHA for 200 concurrent admissions");
}

/// A webhook retried after its call ended gets the same `Ended` answer inside a batch, beside
/// fresh admissions that do take slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_webhook_of_an_ended_call_is_refused_inside_a_batch() {
    let server = RedisServer::start().unwrap();
    let store = Arc::new(
        RedisStore::connect(&server.url(), redis_config(500))
            .await
            .unwrap(),
    );
    let ended: Vec<usize> = (0..20).collect();
    for n in &ended {
        let state = CallState::reserved(sid(*n).as_str(), "r1");
        let admission = store
            .admit(&sid(*n), AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
            .await
            .unwrap();
        assert!(admission.is_admitted());
        assert!(store.release(&sid(*n), EndReason::Stop).await.unwrap());
    }
    let before = evalsha_calls(&server);
    // The retries (0..20) go with 180 fresh calls, all at once.
    let answers = concurrent_webhooks(&store, 0..200, |_| None).await;
    for (n, answer) in &answers {
        if *n < 20 {
            assert_eq!(*answer, Admission::Refused(Refusal::Ended), "call {n}");
            let kept = store.read_state(&sid(*n)).await.unwrap().unwrap();
            assert_eq!(kept.end_reason, Some(EndReason::Stop));
        } else {
            assert!(answer.is_admitted(), "call {n}");
        }
    }
    assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "180");
    assert_eq!(server.cli(&["GET", "calls:stats:started"]).unwrap(), "200");
    let sent = evalsha_calls(&server) - before;
    assert!(sent < 200, "{sent} EVALSHA for 200 concurrent admissions");
}

// ---- Redis only: admissions under a stalled Redis (docs/reference.md#admission-deadline).

/// Every admission meets a Redis stopped (`SIGSTOP`: its socket buffers what is sent, and it runs
/// all of it when it is continued) as it arrives: each is answered within its deadline (one past
/// the queue's bound at once), and none takes a slot when Redis runs the held scripts afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stalled_admissions_are_answered_in_time_and_take_no_slot() {
    use calls_core::store::{Shed, StoreError};

    let deadline = Duration::from_millis(1500);
    let config = StoreConfig {
        admission_deadline: deadline,
        admission_queue: 8,
        ..redis_config(50)
    };
    let fx = redis(config, 1).await;
    let server = fx.redis.as_ref().unwrap();
    let store = Arc::clone(&fx.stores[0]);
    // Connected, scripts loaded, Redis' clock known: as a replica that has served for a while.
    assert!(take(store.as_ref(), &sid(1000), LEASE).await.is_admitted());
    assert!(store.release(&sid(1000), EndReason::Stop).await.unwrap());

    let pid = server.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let began = tokio::time::Instant::now();
    let admit = |n: usize| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let state = CallState::reserved(sid(n).as_str(), "r1");
            let answer = store
                .admit(&sid(n), AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
                .await;
            (answer, began.elapsed())
        })
    };
    // The first is sent and held by the pause; then eight fill the queue and four find it full.
    let first = admit(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest: Vec<_> = (1..=12).map(admit).collect();
    let mut full = 0;
    for handle in std::iter::once(first).chain(rest) {
        let (answer, took) = handle.await.unwrap();
        match answer {
            Err(StoreError::Shed {
                cause: Shed::QueueFull,
            }) => {
                full += 1;
                assert!(took < deadline, "refused at once, not after {took:?}");
            }
            Err(StoreError::Shed {
                cause: Shed::Deadline,
            }) => {
                // The deadline, plus this machine's scheduling under load.
                assert!(
                    took < deadline + Duration::from_secs(1),
                    "answered after {took:?}"
                );
            }
            other => panic!("a stalled admission answered {other:?}"),
        }
    }
    // Four over the bound; five if the driver had not yet taken the first off the queue.
    assert!((4..=5).contains(&full), "{full} refused for a full queue");
    // Redis goes on and runs what it held: nothing may be admitted now.
    tokio::time::sleep(Duration::from_millis(4000).saturating_sub(began.elapsed())).await;
    signal("-CONT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = store.ping().await;
    assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "0");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "0");
    assert_eq!(server.cli(&["GET", "calls:stats:started"]).unwrap(), "1");
    // And the store admits again as before.
    assert!(take(store.as_ref(), &sid(2000), LEASE).await.is_admitted());
}

/// The admission script succeeded (the slot is taken) but ending the states of the slots it
/// reclaimed failed (this user may not `MGET`): the admission stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_failed_follow_up_write_does_not_refuse_an_admitted_call() {
    let server = RedisServer::start_tcp().expect("start redis-server");
    server
        .cli(&[
            "ACL", "SETUSER", "calls", "on", ">pw", "~*", "&*", "+@all", "-mget",
        ])
        .unwrap();
    let addr = server.addr().unwrap();
    let url = format!("redis://calls:pw@{addr}/0");
    let store = RedisStore::connect(&url, redis_config(5)).await.unwrap();
    // A slot whose lease lapsed long ago: the next admission reclaims it and ends its state.
    let lapsed = sid(7);
    server
        .cli(&["ZADD", "calls:slots", "1", lapsed.as_str()])
        .unwrap();
    let state = CallState::reserved(sid(1).as_str(), "r1");
    let admission = store
        .admit(&sid(1), AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
        .await
        .expect("the admission stands");
    assert!(
        matches!(admission, Admission::Admitted { new: true, .. }),
        "{admission:?}"
    );
    assert_eq!(server.cli(&["ZCARD", "calls:slots"]).unwrap(), "1");
    assert_eq!(server.cli(&["GET", "calls:active_count"]).unwrap(), "1");
}

/// The task that sends the admissions to Redis ended under a store that lives on (here: its
/// runtime shut down): the store says so (`/readyz` answers 503) and refuses every admission.
#[test]
fn redis_a_dead_admission_driver_is_reported() {
    let server = RedisServer::start().expect("start redis-server");
    let first = tokio::runtime::Runtime::new().unwrap();
    let store = first
        .block_on(RedisStore::connect(&server.url(), redis_config(5)))
        .unwrap();
    assert!(!store.admissions_stopped());
    assert!(first.block_on(take(&store, &sid(1), LEASE)).is_admitted());
    assert!(!store.admissions_stopped());
    drop(first);
    assert!(store.admissions_stopped());
    let second = tokio::runtime::Runtime::new().unwrap();
    let refused = second.block_on(store.admit(&sid(2), AdmitPolicy::MayTakeSlot, LEASE, None));
    assert!(refused.is_err(), "{refused:?}");
}

/// A tenant's set that drifted from `calls:slots` (a member it should not have, a member missing:
/// a key edited or lost) is exact again after the next renewal tick, so the tenant's cap counts
/// its live calls, no more and no fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_drifted_tenant_set_heals_on_the_next_tick() {
    let fx = redis(
        StoreConfig {
            default_tenant_limit: Some(3),
            ..redis_config(50)
        },
        1,
    )
    .await;
    let server = fx.redis.as_ref().unwrap();
    let store = fx.store();
    for n in [1, 2] {
        assert!(take_for(store, &sid(n), "acme", LEASE).await.is_admitted());
    }
    assert!(
        take_for(store, &sid(5), "globex", LEASE)
            .await
            .is_admitted()
    );
    let acme = "calls:tenant:acme:slots";
    let globex = "calls:tenant:globex:slots";
    // A phantom in acme's set (no slot in calls:slots), and globex's set lost its member.
    server
        .cli(&["ZADD", acme, "99999999999999", "CAphantom"])
        .unwrap();
    server.cli(&["ZREM", globex, sid(5).as_str()]).unwrap();
    // acme counts 3 of its cap of 3: its next call is refused while it truly holds 2.
    assert!(matches!(
        take_for(store, &sid(3), "acme", LEASE).await,
        Admission::Refused(Refusal::TenantAtLimit { .. })
    ));

    reclaim(store).await;
    let members = server.cli(&["ZRANGE", acme, "0", "-1"]).unwrap();
    let mut members: Vec<&str> = members.lines().collect();
    members.sort_unstable();
    assert_eq!(members, [sid(1).as_str(), sid(2).as_str()]);
    assert_eq!(
        server.cli(&["ZSCORE", globex, sid(5).as_str()]).unwrap(),
        server
            .cli(&["ZSCORE", "calls:slots", sid(5).as_str()])
            .unwrap(),
        "globex's call is back in its set with its deadline"
    );
    assert!(take_for(store, &sid(3), "acme", LEASE).await.is_admitted());
}

// ---- Outbound calls (docs/reference.md#outbound): the queue, the paced dial step, the slot held
// from before the REST request, 429s, cancels, and calls whose dialing replica died.

mod outbound {
    use std::time::Duration;

    use calls_core::call_sid::CallSid;
    use calls_core::outbound::{
        NewOutbound, OutboundCall, OutboundError, OutboundId, OutboundStatus,
    };
    use calls_core::store::{Admission, AdmitPolicy, CallStore, DialPolicy, DialStep, StoreConfig};

    use super::{Fixture, LEASE, Make, config, sid, take};

    const INTERVAL: Duration = Duration::from_millis(300);

    fn policy(outbound_limit: u64) -> DialPolicy {
        DialPolicy {
            outbound_limit,
            interval: INTERVAL,
            replica: "r1".into(),
            dial_margin: Duration::from_millis(200),
        }
    }

    fn request(to: u32, tenant: Option<&str>) -> OutboundCall {
        OutboundCall::queued(
            &OutboundId::random(),
            NewOutbound {
                to: format!("+1415555{to:04}"),
                from: "+14155550000".into(),
                tenant: tenant.map(str::to_owned),
                parameters: [("lang".to_owned(), "en".to_owned())].into(),
                timeout_secs: 1,
            },
        )
    }

    async fn queue(store: &dyn CallStore, call: &OutboundCall) -> OutboundId {
        let enqueued = store.enqueue(call, None).await.unwrap();
        assert!(enqueued.new);
        OutboundId::parse(&enqueued.record.id).unwrap()
    }

    async fn dial(store: &dyn CallStore, policy: &DialPolicy) -> DialStep {
        store.dial_next(policy).await.unwrap().step
    }

    /// Dials the next call, waiting out the pace first.
    async fn dial_now(store: &dyn CallStore, policy: &DialPolicy) -> DialStep {
        loop {
            match dial(store, policy).await {
                DialStep::Paced(wait) => tokio::time::sleep(wait).await,
                step => return step,
            }
        }
    }

    fn dialed(step: DialStep) -> OutboundCall {
        match step {
            DialStep::Dial(record) => *record,
            other => panic!("expected a dial, got {other:?}"),
        }
    }

    async fn active(store: &dyn CallStore) -> u64 {
        store.stats().await.unwrap().active
    }

    pub(super) async fn the_slot_is_taken_before_dialing_in_order_and_paced<F>(make: Make<F>)
    where
        F: std::future::Future<Output = Fixture>,
    {
        let fx = make(config(3), 1).await;
        let store = fx.store();
        let policy = policy(2);
        assert_eq!(dial(store, &policy).await, DialStep::Idle);
        let calls: Vec<OutboundCall> = (0..4).map(|n| request(n, None)).collect();
        let mut ids = Vec::new();
        for call in &calls {
            ids.push(queue(store, call).await);
        }
        assert_eq!(store.outbound_queued().await.unwrap(), 4);

        // In order; the slot held from this step, under the outbound id.
        let first = dialed(dial(store, &policy).await);
        assert_eq!(first.id, calls[0].id);
        assert_eq!(first.status, OutboundStatus::Dialing);
        assert_eq!(first.replica.as_deref(), Some("r1"));
        assert!(first.dialed_at.is_some());
        assert_eq!(active(store).await, 1);
        // The pace is cluster-wide: the next step finds it, whoever asks.
        let paced = dial(store, &policy).await;
        assert!(
            matches!(paced, DialStep::Paced(wait) if wait <= INTERVAL && wait > Duration::ZERO),
            "{paced:?}"
        );
        let second = dialed(dial_now(store, &policy).await);
        assert_eq!(second.id, calls[1].id);
        assert_eq!(active(store).await, 2);
        // The cap less the inbound reserve: 2 of 3 lines.
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(dial(store, &policy).await, DialStep::Full);
        assert_eq!(store.outbound_queued().await.unwrap(), 2);

        // Twilio names the first call: its slot moves to the call SID, and the voice webhook's
        // admission finds it held (no second slot).
        let call_sid = sid(1);
        let placed = store.placed(&ids[0], &call_sid).await.unwrap();
        assert_eq!(
            placed.record.unwrap().call_sid.as_deref(),
            Some(call_sid.as_str())
        );
        assert_eq!(
            take(store, &call_sid, LEASE).await,
            Admission::Admitted {
                new: false,
                active: 2
            }
        );
        let answered = store
            .report(&ids[0], Some(&call_sid), OutboundStatus::InProgress)
            .await
            .unwrap();
        assert_eq!(answered.became, Some(OutboundStatus::InProgress));
        assert!(answered.record.unwrap().answered_at.is_some());
        // A late `ringing` never takes it back.
        let late = store
            .report(&ids[0], Some(&call_sid), OutboundStatus::Ringing)
            .await
            .unwrap();
        assert_eq!(
            (late.became, late.record.unwrap().status),
            (None, OutboundStatus::InProgress)
        );

        // Busy frees the second call's slot at once; the third is dialed.
        let busy = store
            .report(&ids[1], None, OutboundStatus::Busy)
            .await
            .unwrap();
        assert_eq!(busy.became, Some(OutboundStatus::Busy));
        assert!(busy.record.unwrap().ended_at.is_some());
        assert_eq!(active(store).await, 1);
        assert_eq!(dialed(dial_now(store, &policy).await).id, calls[2].id);
        let listed = store
            .outbound_calls(Some(OutboundStatus::Busy))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, calls[1].id);
        assert_eq!(store.outbound_calls(None).await.unwrap().len(), 4);
        assert_eq!(store.outbound_calls(None).await.unwrap()[0].id, calls[3].id);
    }

    pub(super) async fn idempotency_requeue_cancel_and_failure<F>(make: Make<F>)
    where
        F: std::future::Future<Output = Fixture>,
    {
        let fx = make(config(5), 1).await;
        let store = fx.store();
        let policy = policy(5);
        let a = request(1, None);
        let first = store.enqueue(&a, Some("key-1")).await.unwrap();
        assert!(first.new);
        let again = store
            .enqueue(&request(2, None), Some("key-1"))
            .await
            .unwrap();
        assert!(!again.new);
        assert_eq!(again.record.id, a.id);
        assert_eq!(store.outbound_queued().await.unwrap(), 1);
        let a_id = OutboundId::parse(&a.id).unwrap();
        let b = request(3, None);
        let b_id = queue(store, &b).await;

        // 429: back to the head, slot given up, the next dial backs off.
        assert_eq!(dialed(dial(store, &policy).await).id, a.id);
        assert_eq!(active(store).await, 1);
        let backoff = Duration::from_millis(800);
        let requeued = store.requeue(&a_id, backoff).await.unwrap();
        assert_eq!(requeued.became, Some(OutboundStatus::Queued));
        let record = requeued.record.unwrap();
        assert_eq!(
            (record.status, record.dialed_at),
            (OutboundStatus::Queued, None)
        );
        assert_eq!(active(store).await, 0);
        let wait = match dial(store, &policy).await {
            DialStep::Paced(wait) => wait,
            other => panic!("expected the back-off, got {other:?}"),
        };
        assert!(wait > INTERVAL, "{wait:?}");
        assert_eq!(dialed(dial_now(store, &policy).await).id, a.id);

        // Twilio refused it: failed with its code and message, slot freed.
        let error = OutboundError {
            code: Some(21211),
            message: "Invalid 'To' Phone Number".into(),
            reason: "twilio_refused".into(),
        };
        let failed = store.fail(&a_id, &error).await.unwrap();
        assert_eq!(failed.became, Some(OutboundStatus::Failed));
        assert_eq!(failed.record.unwrap().error, Some(error.clone()));
        assert_eq!(active(store).await, 0);
        assert_eq!(store.fail(&a_id, &error).await.unwrap().became, None);

        // A queued call is canceled and never dialed; a placed one is not canceled here.
        let canceled = store.cancel_queued(&b_id).await.unwrap();
        assert_eq!(canceled.became, Some(OutboundStatus::Canceled));
        assert_eq!(store.outbound_queued().await.unwrap(), 0);
        assert_eq!(dial_now(store, &policy).await, DialStep::Idle);
        assert_eq!(store.cancel_queued(&a_id).await.unwrap().became, None);
        let unknown = OutboundId::random();
        assert_eq!(store.outbound_call(&unknown).await.unwrap(), None);
        assert_eq!(store.cancel_queued(&unknown).await.unwrap().record, None);
    }

    pub(super) async fn a_call_whose_dialer_died_ends_interrupted_unless_twilio_reports<F>(
        make: Make<F>,
    ) where
        F: std::future::Future<Output = Fixture>,
    {
        let fx = make(config(5), 2).await;
        let (one, other) = (fx.stores[0].as_ref(), fx.stores[1].as_ref());
        let policy = policy(5);
        let lost = request(1, None);
        let reported = request(2, None);
        let lost_id = queue(one, &lost).await;
        let reported_id = queue(one, &reported).await;
        // One replica takes both and dies before Twilio answers it (nothing more from it).
        dialed(dial_now(one, &policy).await);
        dialed(dial_now(one, &policy).await);
        assert_eq!(active(other).await, 2);
        // Twilio's callbacks, carrying the id, still reach another replica for the second.
        let call_sid = sid(7);
        other
            .report(&reported_id, Some(&call_sid), OutboundStatus::Ringing)
            .await
            .unwrap();
        other
            .report(&reported_id, Some(&call_sid), OutboundStatus::NoAnswer)
            .await
            .unwrap();
        // Past the ring timeout (1 s) plus the margin, any replica's dial step ends the first.
        tokio::time::sleep(Duration::from_millis(1400)).await;
        let outcome = other.dial_next(&policy).await.unwrap();
        assert_eq!(outcome.step, DialStep::Idle);
        assert_eq!(outcome.interrupted.len(), 1);
        let record = other.outbound_call(&lost_id).await.unwrap().unwrap();
        assert_eq!(record.status, OutboundStatus::Failed);
        assert_eq!(record.error.unwrap().reason, "dial_interrupted");
        let record = other.outbound_call(&reported_id).await.unwrap().unwrap();
        assert_eq!(record.status, OutboundStatus::NoAnswer);
        assert_eq!(record.call_sid.as_deref(), Some(call_sid.as_str()));
        // Nothing is placed again, and no slot is left behind.
        assert_eq!(other.dial_next(&policy).await.unwrap().interrupted, vec![]);
        assert_eq!(active(other).await, 0);
        assert_eq!(
            other
                .admit(&sid(9), AdmitPolicy::MayTakeSlot, LEASE, None)
                .await
                .unwrap(),
            Admission::Admitted {
                new: true,
                active: 1
            }
        );
    }

    pub(super) async fn a_tenant_at_its_cap_holds_its_call_back<F>(make: Make<F>)
    where
        F: std::future::Future<Output = Fixture>,
    {
        let fx = make(
            StoreConfig {
                default_tenant_limit: Some(1),
                ..config(5)
            },
            1,
        )
        .await;
        let store = fx.store();
        let policy = policy(5);
        queue(store, &request(1, Some("acme"))).await;
        let second = request(2, Some("acme"));
        let second_id = queue(store, &second).await;
        let first = dialed(dial_now(store, &policy).await);
        assert_eq!(dial_now(store, &policy).await, DialStep::TenantFull);
        let (_, tenants) = store.snapshot(true).await.unwrap();
        assert_eq!(tenants["acme"].active, 1);
        // The call answered and ended: its tenant's slot goes with it.
        let call_sid = CallSid::parse("CAfirst").unwrap();
        let first_id = OutboundId::parse(&first.id).unwrap();
        store.placed(&first_id, &call_sid).await.unwrap();
        let (_, tenants) = store.snapshot(true).await.unwrap();
        assert_eq!(tenants["acme"].active, 1);
        store
            .release(&call_sid, calls_core::state::EndReason::StatusCallback)
            .await
            .unwrap();
        assert_eq!(dialed(dial_now(store, &policy).await).id, second.id);
        let _ = second_id;
    }

    #[tokio::test]
    async fn redis_nobody_is_dialed_while_a_caller_waits() {
        let fx = super::redis(config(5), 1).await;
        let store = fx.store();
        let policy = policy(5);
        queue(store, &request(1, None)).await;
        let server = fx.redis.as_ref().unwrap();
        // A caller in the waiting room until a minute from now (the waiting room's key).
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        let now_ms = secs * 1000 + micros / 1000;
        let _: () = redis::cmd("ZADD")
            .arg(calls_core::keys::WAIT_CALLERS)
            .arg(now_ms + 60_000)
            .arg("CAwaiting")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(dial(store, &policy).await, DialStep::CallersWaiting);
        assert_eq!(active(store).await, 0);
        // A caller who counts as gone (score in the past) holds nobody back.
        let _: () = redis::cmd("ZADD")
            .arg(calls_core::keys::WAIT_CALLERS)
            .arg(now_ms - 1)
            .arg("CAwaiting")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(matches!(dial(store, &policy).await, DialStep::Dial(_)));
    }
}

suite!(
    outbound_dial_order,
    super::outbound::the_slot_is_taken_before_dialing_in_order_and_paced
);
suite!(
    outbound_idempotency_requeue_cancel,
    super::outbound::idempotency_requeue_cancel_and_failure
);
suite!(
    outbound_interrupted,
    super::outbound::a_call_whose_dialer_died_ends_interrupted_unless_twilio_reports
);
suite!(
    outbound_tenant_cap,
    super::outbound::a_tenant_at_its_cap_holds_its_call_back
);
