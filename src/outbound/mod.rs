//! Outbound calls on this replica (docs/reference.md#outbound): what the `/v1/calls` API, the voice
//! webhook and the status callback ask of the outbound store, with logs and metrics; the dialer
//! task that places queued calls lives in [`dialer`].

pub(crate) mod dialer;

use axum::http::Uri;
use calls_core::call_sid::CallSid;
use calls_core::outbound::{NewOutbound, OutboundCall, OutboundId, OutboundStatus};
use calls_core::store::{Enqueued, StoreError, Transition};
use tracing::{info, warn};

use crate::app::App;

/// The query parameter that carries the outbound id on the voice webhook and status callback
/// URLs given to Twilio.
pub(crate) const ID_PARAMETER: &str = "outbound";

/// The outbound id a Twilio request's URL carries, if any (and well-formed).
pub(crate) fn id_of(uri: &Uri) -> Option<OutboundId> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == ID_PARAMETER)
        .and_then(|(_, value)| OutboundId::parse(&value).ok())
}

/// `{PUBLIC_URL}{path}?outbound={id}`: the URLs a placed call's Twilio requests come to.
pub(crate) fn callback_url(public_url: &str, path: &str, id: &OutboundId) -> String {
    format!(
        "{}{path}?{ID_PARAMETER}={id}",
        public_url.trim_end_matches('/')
    )
}

/// Records what `transition` did in the metrics.
fn count(app: &App, transition: &Transition) {
    if let Some(status) = transition.became {
        app.metrics().outbound(status);
    }
}

/// Queues a call (or answers the call an `Idempotency-Key` already queued) and wakes this
/// replica's dialer.
pub(crate) async fn queue(
    app: &App,
    request: NewOutbound,
    idempotency_key: Option<&str>,
) -> Result<Enqueued, StoreError> {
    let record = OutboundCall::queued(&OutboundId::random(), request);
    let enqueued = app
        .calls()
        .store()
        .enqueue(&record, idempotency_key)
        .await
        .inspect_err(|err| app.metrics().redis_error(err.op()))?;
    if enqueued.new {
        info!(outbound_id = %enqueued.record.id, tenant = ?enqueued.record.tenant, "outbound call queued");
        app.dialer_wake().notify_one();
    }
    Ok(enqueued)
}

/// `DELETE /v1/calls/{id}`: a queued call is canceled; a placed one is ended through Twilio
/// (canceled while it rings, hung up once answered), its record then following Twilio's
/// callbacks. `None`: no such call.
pub(crate) async fn cancel(
    app: &App,
    id: &OutboundId,
) -> Result<Option<OutboundCall>, CancelError> {
    let store = app.calls().store();
    let transition = store
        .cancel_queued(id)
        .await
        .inspect_err(|err| app.metrics().redis_error(err.op()))?;
    count(app, &transition);
    let Some(record) = transition.record else {
        return Ok(None);
    };
    if transition.became.is_some() || record.status.is_final() {
        return Ok(Some(record));
    }
    let Some(call_sid) = record.call_sid.clone() else {
        // The REST request is in flight: Twilio has not named the call yet.
        return Err(CancelError::NotYetPlaced);
    };
    let Some(client) = app.twilio_client() else {
        return Err(CancelError::NotYetPlaced);
    };
    let how = if record.status == OutboundStatus::InProgress {
        twilio_api::EndCall::HangUp
    } else {
        twilio_api::EndCall::Cancel
    };
    match client.end_call(&call_sid, how).await {
        Ok(call) => {
            info!(%call_sid, outbound_id = %id, status = ?call.status, "outbound call ended through Twilio");
            Ok(store.outbound_call(id).await?)
        }
        Err(err) => {
            warn!(%call_sid, outbound_id = %id, error = %err, "Twilio refused to end the outbound call");
            Err(CancelError::Twilio(err.to_string()))
        }
    }
}

/// Why a cancel could not be done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CancelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the call is being placed; try again in a moment")]
    NotYetPlaced,
    #[error("Twilio refused to end the call: {0}")]
    Twilio(String),
}

/// The voice webhook of a call the cluster placed: Twilio named its call SID and the callee
/// answered. Its slot moves to the call SID (if still under the id) and the record says
/// `in-progress`. Returns the record, `None` when the id names no call.
pub(crate) async fn answered(
    app: &App,
    id: &OutboundId,
    call_sid: &CallSid,
) -> Option<OutboundCall> {
    reported(app, id, Some(call_sid), OutboundStatus::InProgress).await
}

/// A status callback of a call the cluster placed (`CallStatus` as Twilio sent it).
pub(crate) async fn status_callback(
    app: &App,
    id: &OutboundId,
    call_sid: &CallSid,
    call_status: &str,
) {
    let Some(status) = OutboundStatus::from_twilio(call_status) else {
        return;
    };
    reported(app, id, Some(call_sid), status).await;
}

async fn reported(
    app: &App,
    id: &OutboundId,
    call_sid: Option<&CallSid>,
    status: OutboundStatus,
) -> Option<OutboundCall> {
    match app.calls().store().report(id, call_sid, status).await {
        Ok(transition) => {
            count(app, &transition);
            if let Some(became) = transition.became {
                info!(call_sid = ?call_sid.map(CallSid::as_str), outbound_id = %id, status = %became, "outbound call status");
            }
            transition.record
        }
        Err(err) => {
            app.metrics().redis_error(err.op());
            warn!(call_sid = ?call_sid.map(CallSid::as_str), outbound_id = %id, error = %err, "outbound status not recorded");
            None
        }
    }
}

/// Sets `calls_outbound_queued` from the store (at each scrape), where the API is on: without
/// it nothing is ever queued and the scrape keeps its one round trip.
pub(crate) async fn refresh_queued_gauge(app: &App) {
    if app.config().outbound.is_none() {
        return;
    }
    match app.calls().store().outbound_queued().await {
        Ok(queued) => {
            app.metrics()
                .outbound_queued
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        Err(err) => app.metrics().redis_error(err.op()),
    }
}
