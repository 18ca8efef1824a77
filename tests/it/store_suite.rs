//! One suite, two backends: every behaviour the in-process and Redis stores share runs against both,
//! the Redis side against a real `redis-server` this binary starts per test.

use std::sync::Arc;
use std::time::Duration;

use calls_core::call_sid::CallSid;
use calls_core::state::{CallState, CallStatus, EndReason};
use calls_core::store::{
    Admission, AdmitPolicy, CallStore, LockOutcome, MemoryStore, RedisStore, Refusal, RenewBatch,
    Renewal, ReplicaHeartbeat, StoreConfig,
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

/// A renewal batch from replica `r1` for `calls` (call SID, lock token, state).
fn batch(lease: Duration, calls: Vec<(CallSid, &str, Option<CallState>)>) -> RenewBatch {
    RenewBatch {
        lease,
        heartbeat: ReplicaHeartbeat {
            id: "r1".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            calls_active: calls.len() as u64,
            draining: false,
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
/// `name::redis`, each handing the body a constructor `make(config, handles)`.
macro_rules! suite {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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
    assert_eq!(store.reclaim().await.unwrap(), Vec::<String>::new());
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
    assert_eq!(store.reclaim().await.unwrap(), vec![sid(1).to_string()]);
    assert_eq!(store.stats().await.unwrap().active, 0);
}
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
    assert_eq!(store.reclaim().await.unwrap(), vec![sid(3).to_string()]);
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
    take(store, &live, Duration::from_millis(200)).await;
    assert_eq!(
        store.take_lock(&live, "token-1").await.unwrap(),
        LockOutcome::Acquired
    );
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
    assert!(store.reclaim().await.unwrap().is_empty());

    // A lock another owner holds is reported and that call's state is not written.
    assert_eq!(
        store.take_lock(&lost, "token-2").await.unwrap(),
        LockOutcome::Acquired
    );
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
    assert_eq!(
        a.take_lock(&call, "A").await.unwrap(),
        LockOutcome::Acquired
    );
    assert_eq!(
        a.take_lock(&call, "A").await.unwrap(),
        LockOutcome::Acquired
    );
    assert_eq!(
        b.take_lock(&call, "B").await.unwrap(),
        LockOutcome::HeldBy("A".into())
    );
    assert!(!b.renew_lock(&call, "B").await.unwrap());
    assert!(!b.release_lock(&call, "B").await.unwrap());
    assert!(a.renew_lock(&call, "A").await.unwrap());
    assert!(a.release_lock(&call, "A").await.unwrap());
    assert!(!a.release_lock(&call, "A").await.unwrap());
    assert_eq!(
        b.take_lock(&call, "B").await.unwrap(),
        LockOutcome::Acquired
    );
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
    fx.store()
        .write_state(&CallState::reserved(call.as_str(), "r1"))
        .await
        .unwrap();
    fx.store().take_lock(&call, "t").await.unwrap();
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
    custom
        .store()
        .write_state(&CallState::reserved(call.as_str(), "r1"))
        .await
        .unwrap();
    custom.store().take_lock(&call, "t").await.unwrap();
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
    let mut batch = batch(LEASE, vec![(call.clone(), "t", None)]);
    batch.heartbeat.id = "calls-2".into();
    batch.heartbeat_ttl = Duration::from_secs(30);
    fx.store().renew(&batch).await.unwrap();
    let ttl: i64 = server
        .cli(&["TTL", &format!("calls:state:{call}")])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 3500, "state TTL not refreshed: {ttl}");
    let heartbeat: serde_json::Value =
        serde_json::from_str(&server.cli(&["GET", "calls:replica:calls-2"]).unwrap()).unwrap();
    assert_eq!(heartbeat["id"], "calls-2");
    assert_eq!(heartbeat["calls_active"], 1);
    assert_eq!(heartbeat["draining"], false);
    let hb_ttl: i64 = server
        .cli(&["TTL", "calls:replica:calls-2"])
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&hb_ttl));
}

#[tokio::test]
async fn redis_restarted_empty_reloads_scripts_and_admission_goes_on() {
    let mut fx = redis(redis_config(5), 1).await;
    let store = fx.stores[0].clone();
    assert!(take(store.as_ref(), &sid(1), LEASE).await.is_admitted());
    let server = fx.redis.as_mut().unwrap();
    server.restart_empty().unwrap();
    assert_eq!(server.cli(&["SCRIPT", "EXISTS", "0"]).unwrap(), "0");

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
    // A brand-new dataset counts as recovered data loss too: the first admission waits the holdoff.
    assert_eq!(
        take(store, &sid(1), LEASE).await,
        Admission::Refused(Refusal::Recovering)
    );
    tokio::time::sleep(holdoff).await;
    assert!(take(store, &sid(1), LEASE).await.is_admitted());

    server.cli(&["FLUSHALL"]).unwrap();
    // Before the holdoff ends the live call re-registers through its renewal; newcomers wait.
    assert_eq!(
        take(store, &sid(2), LEASE).await,
        Admission::Refused(Refusal::Recovering)
    );
    let batch = batch(LEASE, vec![(sid(1), "t", None)]);
    assert_eq!(
        store.renew(&batch).await.unwrap().readded,
        vec![sid(1).to_string()]
    );
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

#[test]
fn bad_call_sids_are_typed_errors() {
    use calls_core::call_sid::CallSidError;
    assert_eq!(CallSid::parse(""), Err(CallSidError::Empty));
    assert!(matches!(
        CallSid::parse(&"A".repeat(200)),
        Err(CallSidError::TooLong(200))
    ));
}
