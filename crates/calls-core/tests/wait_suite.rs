//! The waiting room's store contract (docs/reference.md#waiting-room), one suite over both
//! backends as `store_suite.rs` runs the rest: a real `redis-server` per test, and the in-process
//! store in paused time.

use std::sync::Arc;
use std::time::Duration;

use calls_core::call_sid::CallSid;
use calls_core::state::{CallState, CallStatus, EndReason};
use calls_core::store::{Admission, AdmitPolicy, CallStore, MemoryStore, RedisStore, StoreConfig};
use calls_core::wait::{
    OverflowReason, WaitOp, WaitOutcome, WaitReason, WaitReport, WaitSettings, WaitVisit,
};
use testkit::RedisServer;

const LEASE: Duration = Duration::from_secs(30);

fn sid(name: &str) -> CallSid {
    // Readable names in a valid SID: the name's bytes in hex, padded.
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    CallSid::parse(&format!("CA{hex:0>32}")).unwrap()
}

fn settings(poll_secs: u64, max_wait_secs: u64, max_callers: u64) -> WaitSettings {
    WaitSettings {
        max_wait: Duration::from_secs(max_wait_secs),
        max_callers,
        poll: Duration::from_secs(poll_secs),
        hold: Duration::ZERO,
    }
}

struct Fixture {
    store: Arc<dyn CallStore>,
    redis: Option<RedisServer>,
}

fn config(limit: u64, default_tenant_limit: Option<u64>) -> StoreConfig {
    StoreConfig {
        limit,
        recovery_holdoff: Duration::ZERO,
        default_tenant_limit,
        ..StoreConfig::default()
    }
}

async fn memory(config: StoreConfig) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new(config)),
        redis: None,
    }
}

async fn redis(config: StoreConfig) -> Fixture {
    let server = RedisServer::start().expect("start redis-server");
    let store = RedisStore::connect(&server.url(), config)
        .await
        .expect("connect to redis");
    Fixture {
        store: Arc::new(store),
        redis: Some(server),
    }
}

macro_rules! suite {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(start_paused = true)]
            async fn memory() {
                $body(super::memory).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                $body(super::redis).await;
            }
        }
    };
}

type Make<F> = fn(StoreConfig) -> F;

/// One visit of `call` (a webhook over the cap, or a return to `/twilio/wait`).
async fn step(
    store: &dyn CallStore,
    call: &str,
    tenant: Option<&str>,
    digit: bool,
    settings: &WaitSettings,
) -> WaitReport {
    let call_sid = sid(call);
    let mut reserved = CallState::reserved(call_sid.as_str(), "r1");
    reserved.tenant = tenant.map(str::to_owned);
    let mut waiting = CallState::waiting(call_sid.as_str(), "r1");
    waiting.tenant = tenant.map(str::to_owned);
    let visit = WaitVisit {
        call_sid: &call_sid,
        tenant,
        digit,
        reservation: LEASE,
        reserved: &reserved,
        waiting: &waiting,
    };
    store.wait(WaitOp::Visit(visit), settings).await.unwrap()
}

async fn visit(
    store: &dyn CallStore,
    call: &str,
    tenant: Option<&str>,
    settings: &WaitSettings,
) -> WaitOutcome {
    step(store, call, tenant, false, settings).await.outcome
}

async fn take(store: &dyn CallStore, call: &str) {
    let admission = store
        .admit(&sid(call), AdmitPolicy::MayTakeSlot, LEASE, None)
        .await
        .unwrap();
    assert!(matches!(admission, Admission::Admitted { new: true, .. }));
}

async fn free(store: &dyn CallStore, call: &str) {
    assert!(
        store
            .release(&sid(call), EndReason::StatusCallback)
            .await
            .unwrap()
    );
}

async fn state(store: &dyn CallStore, call: &str) -> Option<CallState> {
    store.read_state(&sid(call)).await.unwrap()
}

fn is_waiting(outcome: &WaitOutcome) -> bool {
    matches!(outcome, WaitOutcome::Waiting { .. })
}

fn is_admitted(outcome: &WaitOutcome) -> bool {
    matches!(outcome, WaitOutcome::Admitted { new: true, .. })
}

async fn tenants_take_turns_in_a_fair_order<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(2, None)).await;
    let store = fx.store.as_ref();
    let s = settings(5, 300, 100);
    take(store, "x1").await;
    take(store, "x2").await;
    let mut line = vec![("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")];
    let mut positions = Vec::new();
    for (call, tenant) in &line {
        match visit(store, call, Some(tenant), &s).await {
            WaitOutcome::Waiting {
                position,
                announce: true,
                joined: true,
            } => positions.push(position),
            other => panic!("{call}: {other:?}"),
        }
    }
    // b1 is second in the order as soon as it joins.
    assert_eq!(positions, [1, 2, 3, 2]);
    let waiting = state(store, "a1").await.unwrap();
    assert_eq!(waiting.status, CallStatus::Waiting);
    assert!(waiting.waiting_since.is_some());
    // Waiting callers hold no slot.
    assert_eq!(fx.store.stats().await.unwrap().active, 2);

    let mut connected = Vec::new();
    for gone in ["x1", "x2", "a1", "b1"] {
        free(store, gone).await;
        let next = next_admitted(store, &line, &s).await;
        connected.push(next);
        line.retain(|(call, _)| *call != next);
    }
    assert_eq!(connected, ["a1", "b1", "a2", "a3"]);
    let a3 = state(store, "a3").await.unwrap();
    assert_eq!(a3.status, CallStatus::Reserved);
    // The admitted call's state still says when it joined the line.
    assert!(a3.waiting_since.is_some(), "{a3:?}");
    let stats = fx.store.stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (2, 6));
    // Joining the line is not a refusal.
    assert_eq!(stats.rejected_max_concurrent, 0);
}

/// Every caller in `line` visits once, the last joined first (the order must not depend on who
/// comes back first); exactly one is admitted, and is returned.
async fn next_admitted<'a>(
    store: &dyn CallStore,
    line: &[(&'a str, &'a str)],
    s: &WaitSettings,
) -> &'a str {
    let mut admitted = None;
    for (call, tenant) in line.iter().rev() {
        let outcome = visit(store, call, Some(tenant), s).await;
        if is_admitted(&outcome) {
            assert!(admitted.is_none(), "two admitted for one slot");
            admitted = Some(*call);
        } else {
            assert!(is_waiting(&outcome), "{call}: {outcome:?}");
        }
    }
    admitted.expect("someone admitted")
}
suite!(fair_order, super::tenants_take_turns_in_a_fair_order);

async fn a_freed_slot_is_kept_for_the_head_of_the_line<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(1, None)).await;
    let store = fx.store.as_ref();
    let s = settings(5, 300, 100);
    take(store, "x1").await;
    assert!(is_waiting(&visit(store, "a1", None, &s).await));
    free(store, "x1").await;
    // A newcomer finds the slot free but the head of the line present: it joins behind.
    match visit(store, "n1", None, &s).await {
        WaitOutcome::Waiting { position: 2, .. } => {}
        other => panic!("newcomer: {other:?}"),
    }
    // The newcomer's next visit does not take the head's turn either.
    assert!(is_waiting(&visit(store, "n1", None, &s).await));
    match visit(store, "a1", None, &s).await {
        WaitOutcome::Admitted {
            new: true,
            active: 1,
            waited: Some(_),
        } => {}
        other => panic!("head: {other:?}"),
    }
    // A retried visit of the admitted call: its slot, never a second one.
    assert_eq!(
        visit(store, "a1", None, &s).await,
        WaitOutcome::Admitted {
            new: false,
            active: 1,
            waited: None
        }
    );
    assert_eq!(fx.store.stats().await.unwrap().active, 1);
    // No slot is left: the newcomer waits on, first in line now.
    match visit(store, "n1", None, &s).await {
        WaitOutcome::Waiting { position: 1, .. } => {}
        other => panic!("newcomer: {other:?}"),
    }
}
suite!(
    kept_turn,
    super::a_freed_slot_is_kept_for_the_head_of_the_line
);

async fn silent_and_hung_up_callers_leave_the_line<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(1, None)).await;
    let store = fx.store.as_ref();
    let s = settings(1, 300, 100);
    take(store, "x1").await;
    assert!(is_waiting(&visit(store, "a1", None, &s).await));
    assert!(is_waiting(&visit(store, "a2", None, &s).await));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(is_waiting(&visit(store, "a2", None, &s).await));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // a1 has been silent for two polls: the sweep takes it out, and a2 is first now.
    let swept = store.wait(WaitOp::Sweep, &s).await.unwrap();
    assert_eq!(
        swept.abandoned,
        [(sid("a1").to_string(), WaitReason::MaxConcurrent)]
    );
    assert_eq!(swept.waiting, 1);
    assert!(swept.longest >= Duration::from_millis(2400));
    let a1 = state(store, "a1").await.unwrap();
    assert_eq!(
        (a1.status, a1.end_reason),
        (CallStatus::Ended, Some(EndReason::WaitAbandoned))
    );
    match visit(store, "a2", None, &s).await {
        WaitOutcome::Waiting { position: 1, .. } => {}
        other => panic!("{other:?}"),
    }
    // A final status callback takes a2 out at once.
    let left = store.wait(WaitOp::Leave(&sid("a2")), &s).await.unwrap();
    assert_eq!(
        left.outcome,
        WaitOutcome::Left {
            sent_by: Some(WaitReason::MaxConcurrent)
        }
    );
    let again = store.wait(WaitOp::Leave(&sid("a2")), &s).await.unwrap();
    assert_eq!(again.outcome, WaitOutcome::Left { sent_by: None });
    assert_eq!(
        state(store, "a2").await.unwrap().end_reason,
        Some(EndReason::WaitAbandoned)
    );
    // Each counted once as refused, for the reason that sent it to the line.
    assert_eq!(fx.store.stats().await.unwrap().rejected_max_concurrent, 2);
    assert_eq!(store.wait(WaitOp::Sweep, &s).await.unwrap().waiting, 0);
    // An abandoned call that comes back is over: no slot, no place.
    free(store, "x1").await;
    assert_eq!(visit(store, "a1", None, &s).await, WaitOutcome::Ended);
}
suite!(
    abandonment,
    super::silent_and_hung_up_callers_leave_the_line
);

async fn overflow_on_the_digit_after_the_longest_wait_and_when_full<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(1, None)).await;
    let store = fx.store.as_ref();
    let s = settings(1, 2, 2);
    take(store, "x1").await;
    assert!(is_waiting(&visit(store, "a1", None, &s).await));
    match step(store, "a1", None, true, &s).await.outcome {
        WaitOutcome::Overflow {
            reason: OverflowReason::Digit,
            sent_by: WaitReason::MaxConcurrent,
            waited: Some(_),
        } => {}
        other => panic!("digit: {other:?}"),
    }
    assert_eq!(
        state(store, "a1").await.unwrap().end_reason,
        Some(EndReason::WaitOverflow)
    );
    assert!(is_waiting(&visit(store, "a2", None, &s).await));
    assert!(is_waiting(&visit(store, "a3", None, &s).await));
    // Two wait: the line is full.
    match visit(store, "a4", None, &s).await {
        WaitOutcome::Overflow {
            reason: OverflowReason::Full,
            waited: None,
            ..
        } => {}
        other => panic!("full: {other:?}"),
    }
    assert_eq!(state(store, "a4").await, None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(is_waiting(&visit(store, "a2", None, &s).await));
    assert!(is_waiting(&visit(store, "a3", None, &s).await));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match visit(store, "a2", None, &s).await {
        WaitOutcome::Overflow {
            reason: OverflowReason::Timeout,
            waited: Some(waited),
            ..
        } => assert!(waited >= Duration::from_secs(2)),
        other => panic!("timeout: {other:?}"),
    }
    assert_eq!(
        state(store, "a2").await.unwrap().end_reason,
        Some(EndReason::WaitOverflow)
    );
    let stats = fx.store.stats().await.unwrap();
    assert_eq!(stats.rejected_max_concurrent, 3);
    assert_eq!(stats.active, 1);
    if let Some(server) = &fx.redis {
        for key in [
            "calls:wait:callers",
            "calls:wait:order",
            "calls:wait:info",
            "calls:wait:seq",
        ] {
            let ttl: i64 = server.cli(&["PTTL", key]).unwrap().parse().unwrap();
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
        }
        assert_eq!(server.cli(&["ZCARD", "calls:wait:callers"]).unwrap(), "1");
    }
}
suite!(
    overflow,
    super::overflow_on_the_digit_after_the_longest_wait_and_when_full
);

async fn a_tenant_at_its_cap_waits_without_holding_back_others<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    let fx = make(config(3, Some(1))).await;
    let store = fx.store.as_ref();
    let s = settings(5, 300, 100);
    assert!(is_admitted(&visit(store, "a0", Some("A"), &s).await));
    assert!(is_waiting(&visit(store, "a1", Some("A"), &s).await));
    // a1 cannot use the free slots (its tenant is at its cap): b1 takes one at once.
    assert!(is_admitted(&visit(store, "b1", Some("B"), &s).await));
    match step(store, "a1", Some("A"), true, &s).await.outcome {
        WaitOutcome::Overflow {
            sent_by: WaitReason::TenantLimit,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let stats = fx.store.stats().await.unwrap();
    assert_eq!(
        (stats.rejected_tenant_limit, stats.rejected_max_concurrent),
        (1, 0)
    );
}
suite!(
    tenant_cap,
    super::a_tenant_at_its_cap_waits_without_holding_back_others
);

/// After Redis lost its data, admissions wait for live calls to re-register: a caller arriving
/// then waits in line instead of being refused, and is admitted once the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_puts_callers_in_line_not_out() {
    let fx = redis(StoreConfig {
        recovery_holdoff: Duration::from_millis(1500),
        ..config(1, None)
    })
    .await;
    let store = fx.store.as_ref();
    let s = settings(5, 300, 100);
    take(store, "x1").await;
    let server = fx.redis.as_ref().unwrap();
    server.cli(&["FLUSHALL"]).unwrap();
    match visit(store, "a1", None, &s).await {
        WaitOutcome::Waiting { joined: true, .. } => {}
        other => panic!("during the recovery wait: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(is_admitted(&visit(store, "a1", None, &s).await));
}

/// The last live replica draining answers a waiting caller with the reject mode: the caller
/// leaves the line then (counted once, as it leaves), not two polls later as well.
#[tokio::test(start_paused = true)]
async fn a_caller_turned_away_by_the_last_draining_replica_leaves_the_line() {
    use calls_core::calls::{Calls, CallsConfig, Intake, RejectReason, WaitAnswer, WebhookCall};
    let store: Arc<dyn CallStore> = Arc::new(MemoryStore::new(config(1, None)));
    let s = settings(5, 300, 100);
    let calls = Calls::new(
        CallsConfig {
            replica_id: "r1".into(),
            max_concurrent_calls: 1,
            reservation: LEASE,
            call_lease: LEASE,
            renew_interval: Duration::from_secs(10),
            tenant_key: calls_core::tenant::TenantKey::None,
            default_tenant_limit: None,
            resume_limit: 2,
            wait: Some(s),
            stream_tokens: false,
        },
        store.clone(),
        Arc::new(calls_core::events::NoEvents),
    );
    take(store.as_ref(), "x1").await;
    let a1 = sid("a1");
    let answer = calls
        .visit_line(&a1, WebhookCall::default(), false, Intake::Open)
        .await;
    assert!(
        matches!(answer, WaitAnswer::Wait { position: 1, .. }),
        "{answer:?}"
    );
    let answer = calls
        .visit_line(&a1, WebhookCall::default(), false, Intake::Closed)
        .await;
    assert_eq!(answer, WaitAnswer::Reject(RejectReason::Draining));
    assert_eq!(calls.sweep_line().await.unwrap().waiting, 0);
    assert_eq!(
        state(store.as_ref(), "a1").await.unwrap().end_reason,
        Some(EndReason::WaitAbandoned)
    );
    assert_eq!(store.stats().await.unwrap().rejected_max_concurrent, 1);
}

/// docs/reference.md#outbound: a person on hold comes before a call not yet placed. With a caller
/// in line and a slot free (kept for them), the dial step places nothing; once the caller is
/// served, it dials. The waiting room and outbound calls share the line through the store.
async fn nobody_is_dialed_while_a_caller_waits<F>(make: Make<F>)
where
    F: std::future::Future<Output = Fixture>,
{
    use calls_core::outbound::{NewOutbound, OutboundCall, OutboundId};
    use calls_core::store::{DialPolicy, DialStep};

    let fx = make(config(1, None)).await;
    let store = fx.store.as_ref();
    let s = settings(5, 300, 100);
    let call = OutboundCall::queued(
        &OutboundId::random(),
        NewOutbound {
            to: "+14155550101".into(),
            from: "+14155550000".into(),
            tenant: None,
            parameters: Default::default(),
            timeout_secs: 1,
        },
    );
    assert!(store.enqueue(&call, None).await.unwrap().new);
    let policy = DialPolicy {
        outbound_limit: 1,
        interval: Duration::from_millis(1),
        replica: "r1".into(),
        dial_margin: Duration::from_millis(200),
    };
    take(store, "x1").await;
    assert!(is_waiting(&visit(store, "a1", None, &s).await));
    free(store, "x1").await;
    let step = store.dial_next(&policy).await.unwrap().step;
    assert_eq!(
        step,
        DialStep::CallersWaiting,
        "dialed over a caller on hold"
    );
    assert!(is_admitted(&visit(store, "a1", None, &s).await));
    free(store, "a1").await;
    let step = store.dial_next(&policy).await.unwrap().step;
    assert!(matches!(step, DialStep::Dial(_)), "{step:?}");
}
suite!(
    outbound_waits_for_the_line,
    super::nobody_is_dialed_while_a_caller_waits
);
