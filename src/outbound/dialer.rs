//! The dialer every replica runs while the API is on (docs/reference.md#outbound): a loop of the
//! store's atomic dial step, each call it takes placed with Twilio's REST API, its answer recorded.
//! Thin on purpose: pace, caps, order and "never twice" are the dial step's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use calls_core::call_sid::CallSid;
use calls_core::outbound::{DIAL_MARGIN, OutboundCall, OutboundError, OutboundId};
use calls_core::store::{DialPolicy, DialStep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use twilio_api::{ApiError, CallEvent, NewCall, TwilioClient};

use super::callback_url;
use crate::app::App;

/// With nothing queued, how often another replica's queued calls are looked for (a call queued
/// on this replica wakes it at once).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// With no line free (or callers waiting), how soon the dial step is tried again.
const BLOCKED_POLL: Duration = Duration::from_millis(200);
/// After the store failed, before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// A 429 without `Retry-After` backs the cluster off this long, doubling with each 429 in a row
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Twilio's answer to a call request is awaited this long (then the call fails, as refused).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the placing of one call needs.
struct Placer {
    app: Arc<App>,
    client: TwilioClient,
    public_url: String,
    /// 429s in a row, for the back-off.
    rate_limited: AtomicU32,
}

/// Runs until `stop` (the drain): a draining replica places nothing new; its queued calls stay in
/// the queue for the others. Calls being placed when it stops finish their request.
pub(crate) async fn run(app: Arc<App>, stop: CancellationToken) {
    let (Some(outbound), Some(Ok(client))) =
        (app.config().outbound.clone(), app.twilio_client_result())
    else {
        return;
    };
    let Some(public_url) = app.config().public_url.clone() else {
        return;
    };
    let policy = DialPolicy {
        outbound_limit: app
            .config()
            .max_concurrent_calls
            .saturating_sub(outbound.inbound_reserve),
        interval: outbound.interval,
        replica: app.config().replica_id.clone(),
        dial_margin: DIAL_MARGIN,
    };
    let placer = Arc::new(Placer {
        app: app.clone(),
        client: client.with_timeout(REQUEST_TIMEOUT),
        public_url,
        rate_limited: AtomicU32::new(0),
    });
    let wake = app.dialer_wake().clone();
    info!(
        interval_ms = policy.interval.as_millis() as u64,
        outbound_limit = policy.outbound_limit,
        "outbound dialer started"
    );
    loop {
        let pause = match app.calls().store().dial_next(&policy).await {
            Ok(outcome) => {
                for record in &outcome.interrupted {
                    app.metrics().outbound(record.status);
                    warn!(call_sid = ?record.call_sid, outbound_id = %record.id, "outbound call ended dial_interrupted: its dialer stopped mid-request and Twilio reported nothing");
                }
                match outcome.step {
                    DialStep::Dial(record) => {
                        tokio::spawn(placer.clone().place(*record));
                        continue;
                    }
                    DialStep::Paced(wait) => wait,
                    DialStep::Idle => IDLE_POLL,
                    DialStep::Full
                    | DialStep::TenantFull
                    | DialStep::CallersWaiting
                    | DialStep::Recovering => BLOCKED_POLL,
                }
            }
            Err(err) => {
                app.metrics().redis_error(err.op());
                warn!(error = %err, "outbound dial step failed");
                ERROR_PAUSE
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
        }
    }
    info!("outbound dialer stopped");
}

impl Placer {
    /// Places `record` with Twilio and records the answer: the call SID (its slot moves to it), a
    /// 429 (back to the head of the queue, the cluster backs off), or a refusal (failed).
    async fn place(self: Arc<Self>, record: OutboundCall) {
        let Ok(id) = OutboundId::parse(&record.id) else {
            return;
        };
        let metrics = self.app.metrics();
        if let Some(waited) = record.queued_for() {
            metrics.outbound_dial.observe(waited.as_secs_f64());
        }
        let voice = callback_url(&self.public_url, "/twilio/voice", &id);
        let status = callback_url(&self.public_url, "/twilio/status", &id);
        let request = NewCall {
            to: &record.to,
            from: &record.from,
            url: &voice,
            timeout_secs: Some(record.timeout_secs),
            status_callback: Some(&status),
            status_callback_events: &CallEvent::ALL,
        };
        let store = self.app.calls().store();
        let result = self.client.create_call(&request).await;
        let recorded = match result {
            Ok(call) => {
                self.rate_limited.store(0, Ordering::Relaxed);
                match CallSid::parse(&call.sid) {
                    Ok(call_sid) => {
                        info!(%call_sid, outbound_id = %id, "outbound call placed");
                        store.placed(&id, &call_sid).await
                    }
                    Err(err) => {
                        // Twilio placed it, but its SID cannot name a key: its callbacks still
                        // carry the id and bind it.
                        warn!(outbound_id = %id, error = %err, "Twilio named the call with an unusable SID");
                        return;
                    }
                }
            }
            Err(ApiError::RateLimited { retry_after, .. }) => {
                let in_a_row = self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let backoff = retry_after.unwrap_or_else(|| {
                    FIRST_BACKOFF
                        .saturating_mul(1 << in_a_row.min(5))
                        .min(MAX_BACKOFF)
                });
                info!(outbound_id = %id, backoff_ms = backoff.as_millis() as u64, "Twilio answered 429; the call goes back to the head of the queue");
                store.requeue(&id, backoff).await
            }
            Err(err) => {
                let error = OutboundError {
                    code: err.code(),
                    message: err.to_string(),
                    reason: if err.status().is_some() {
                        "twilio_refused".into()
                    } else {
                        "twilio_unanswered".into()
                    },
                };
                warn!(outbound_id = %id, error = %err, may_have_been_placed = err.may_have_been_processed(), "outbound call failed: Twilio did not take it");
                store.fail(&id, &error).await
            }
        };
        match recorded {
            Ok(transition) => {
                if let Some(became) = transition.became {
                    metrics.outbound(became);
                }
            }
            Err(err) => {
                metrics.redis_error(err.op());
                warn!(outbound_id = %id, error = %err, "outbound call's answer not recorded; its deadline ends it");
            }
        }
        debug!(outbound_id = %id, "outbound placing done");
    }
}
