//! Twilio's side of the calls it is asked to place: queued at once, dialled at the account's pace,
//! rung, then answered, busy, unanswered or failed; status callbacks sent as Twilio sends them
//! (in order, signed), and an answered call's voice webhook and Media Stream driven by the
//! simulator's own call code (`call::run_placed`) until the callee hangs up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until, timeout};

use super::clock;
use super::outcome::{Outcome, Outcomes};
use super::resources::{ApiError, CallStatus, CallView, NewCall, call_json, sip_response_code};
use crate::call::{self, CallEnd, CallPlan};
use crate::rng::Rng;
use crate::stats::Stats;
use crate::target::{Reach, Target};
use crate::webhook::{self, CallIds};

/// Twilio gives a status callback this long to answer.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// How the double places calls.
#[derive(Debug, Clone)]
pub struct DialSettings {
    pub account_sid: String,
    /// Signs every request the double makes (`X-Twilio-Signature`), as the account's token does.
    pub auth_token: Option<String>,
    /// Every connection goes here (`--target`); `None`: to the host each URL names.
    pub target: Option<String>,
    pub reach: Reach,
    /// From the REST request to `initiated` (after the account's pace allows the dial).
    pub dial_delay: Duration,
    /// From `ringing` to answered or busy.
    pub ring: Duration,
    /// From `ringing` to `no-answer`; `None`: the request's `Timeout`, as Twilio does.
    pub no_answer: Option<Duration>,
    /// How long an answered call talks (streams) before the callee hangs up.
    pub talk: Duration,
    /// The account's calls per second: dials beyond it wait their turn (Twilio queues them).
    pub cps: Option<f64>,
    /// After the callee's `stop`, how long to wait for the server's close.
    pub drain: Duration,
}

/// The calls placed so far, in creation order and by SID.
#[derive(Default)]
struct Book {
    order: Vec<Arc<PlacedCall>>,
    by_sid: HashMap<String, Arc<PlacedCall>>,
}

/// Places calls and remembers them.
pub struct Dialer {
    settings: DialSettings,
    outcomes: Mutex<Outcomes>,
    book: Mutex<Book>,
    /// One call plan per place the double connects to (the origin of a URL, or `--target`).
    plans: Mutex<HashMap<String, Arc<CallPlan>>>,
    /// Every answered call's stream adds to these.
    pub stats: Stats,
    next_dial: Mutex<Option<Instant>>,
    seeds: Mutex<Rng>,
}

/// One call the double was asked to place.
pub struct PlacedCall {
    pub sid: String,
    pub request: NewCall,
    pub outcome: Outcome,
    pub created_us: i64,
    /// How long the account's pace made it wait before dialling, in ms (`queue_time`).
    pub queue_time_ms: u64,
    progress: Mutex<Progress>,
    /// Notified when the call is canceled before it was answered.
    wake: Notify,
    /// Notified when an answered call is hung up through the API.
    hangup: Notify,
}

struct Progress {
    status: CallStatus,
    updated_us: i64,
    dialed_us: Option<i64>,
    answered_us: Option<i64>,
    ended_us: Option<i64>,
    callbacks: Vec<CallbackSent>,
    /// How the answered call's webhook and stream went.
    media: Option<String>,
}

/// One status callback the double sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallbackSent {
    pub sequence: u64,
    /// `initiated`, `ringing`, `answered` or `completed`.
    pub event: &'static str,
    pub call_status: &'static str,
    pub sent_unix_us: i64,
    /// The server's answer; `None` when it gave none (error or timeout).
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PlacedCall {
    fn status(&self) -> CallStatus {
        lock(&self.progress).status
    }

    /// Moves an unfinished call on to `to`; false when it had already ended (canceled).
    fn advance(&self, to: CallStatus) -> bool {
        let now = clock::now_us();
        let mut progress = lock(&self.progress);
        if progress.status.is_final() {
            return false;
        }
        progress.status = to;
        progress.updated_us = now;
        match to {
            CallStatus::Initiated => progress.dialed_us = Some(now),
            CallStatus::InProgress => progress.answered_us = Some(now),
            _ => {}
        }
        true
    }

    /// Ends the call as `status` unless it already ended; the status it ended with.
    fn end(&self, status: CallStatus) -> CallStatus {
        let now = clock::now_us();
        let mut progress = lock(&self.progress);
        if !progress.status.is_final() {
            progress.status = status;
            progress.updated_us = now;
            progress.ended_us = Some(now);
        }
        progress.status
    }

    /// Waits until `deadline`; false if the call was canceled meanwhile.
    async fn wait_until(&self, deadline: Instant) -> bool {
        tokio::select! {
            () = sleep_until(deadline) => {}
            () = self.wake.notified() => {}
        }
        !self.status().is_final()
    }

    fn duration_secs(progress: &Progress) -> Option<u64> {
        let ended = progress.ended_us?;
        let secs = progress.answered_us.map_or(0, |answered| {
            u64::try_from((ended - answered + 500_000) / 1_000_000).unwrap_or(0)
        });
        Some(secs)
    }

    /// The Call resource as the REST API shows it now.
    pub fn resource(&self, account_sid: &str) -> Value {
        let progress = lock(&self.progress);
        call_json(&CallView {
            account_sid,
            sid: &self.sid,
            to: &self.request.to,
            from: &self.request.from,
            status: progress.status,
            created_us: self.created_us,
            updated_us: progress.updated_us,
            start_us: progress.answered_us,
            end_us: progress.ended_us,
            duration_secs: Self::duration_secs(&progress),
            queue_time_ms: self.queue_time_ms,
        })
    }

    /// The double's own account of the call: the request, the outcome chosen, every callback
    /// and how its media went (`GET /_double/calls`).
    pub fn report(&self) -> Value {
        let progress = lock(&self.progress);
        json!({
            "sid": self.sid,
            "to": self.request.to,
            "from": self.request.from,
            "url": self.request.url,
            "status_callback": self.request.status_callback,
            "timeout_secs": self.request.timeout_secs,
            "outcome": self.outcome.name(),
            "status": progress.status.as_str(),
            "created_at": clock::rfc3339(self.created_us),
            "created_unix_us": self.created_us,
            "dialed_unix_us": progress.dialed_us,
            "answered_unix_us": progress.answered_us,
            "ended_unix_us": progress.ended_us,
            "duration_secs": Self::duration_secs(&progress),
            "callbacks": progress.callbacks,
            "media": progress.media,
        })
    }

    fn wants(&self, event: Event) -> bool {
        let events = &self.request.events;
        self.request.status_callback.is_some()
            && match event {
                Event::Initiated => events.initiated,
                Event::Ringing => events.ringing,
                Event::Answered => events.answered,
                Event::Completed => events.completed,
            }
    }
}

impl Dialer {
    pub fn new(settings: DialSettings, outcomes: Outcomes, seed: u64) -> Self {
        Self {
            settings,
            outcomes: Mutex::new(outcomes),
            book: Mutex::default(),
            plans: Mutex::default(),
            stats: Stats::default(),
            next_dial: Mutex::new(None),
            seeds: Mutex::new(Rng::new(seed)),
        }
    }

    pub fn outcomes(&self) -> MutexGuard<'_, Outcomes> {
        lock(&self.outcomes)
    }

    /// Queues a call and starts playing it; the REST answer is given at once, before it rings.
    pub fn place(self: &Arc<Self>, sid: String, request: NewCall) -> Arc<PlacedCall> {
        let created_us = clock::now_us();
        let outcome = self.outcomes().pick(&request.to);
        let now = Instant::now();
        let dial_at = match self.settings.cps {
            None => now,
            Some(cps) => {
                let mut next = lock(&self.next_dial);
                let at = next.map_or(now, |next| next.max(now));
                *next = Some(at + Duration::from_secs_f64(1.0 / cps));
                at
            }
        };
        let queue_time_ms = u64::try_from(dial_at.duration_since(now).as_millis()).unwrap_or(0);
        let call = Arc::new(PlacedCall {
            sid,
            request,
            outcome,
            created_us,
            queue_time_ms,
            progress: Mutex::new(Progress {
                status: CallStatus::Queued,
                updated_us: created_us,
                dialed_us: None,
                answered_us: None,
                ended_us: None,
                callbacks: Vec::new(),
                media: None,
            }),
            wake: Notify::new(),
            hangup: Notify::new(),
        });
        {
            let mut book = lock(&self.book);
            book.order.push(call.clone());
            book.by_sid.insert(call.sid.clone(), call.clone());
        }
        tokio::spawn(
            self.clone()
                .play(call.clone(), dial_at + self.settings.dial_delay),
        );
        call
    }

    /// `POST …/Calls/{sid}.json` with `Status`: `canceled` ends a call not yet answered;
    /// `completed` ends it however far it got. The resource after the change.
    pub fn update(&self, sid: &str, path: &str, status: Option<&str>) -> Result<Value, ApiError> {
        let call = lock(&self.book)
            .by_sid
            .get(sid)
            .cloned()
            .ok_or_else(|| ApiError::not_found(path))?;
        let hang_up = match status {
            Some("completed") => true,
            Some("canceled") => false,
            Some(other) => {
                return Err(ApiError::new(
                    400,
                    21218,
                    format!("Invalid Status: {other}. Use canceled or completed"),
                ));
            }
            None => {
                return Err(ApiError::new(
                    400,
                    21205,
                    "This Twilio double updates a call's Status only",
                ));
            }
        };
        let now = clock::now_us();
        {
            let mut progress = lock(&call.progress);
            match progress.status {
                status if status.is_final() => {
                    return Err(ApiError::new(
                        400,
                        21220,
                        "Call is not in-progress. Cannot redirect.",
                    ));
                }
                CallStatus::InProgress if !hang_up => {}
                CallStatus::InProgress => {
                    progress.status = CallStatus::Completed;
                    progress.updated_us = now;
                    progress.ended_us = Some(now);
                    call.hangup.notify_one();
                }
                _ => {
                    progress.status = CallStatus::Canceled;
                    progress.updated_us = now;
                    progress.ended_us = Some(now);
                    call.wake.notify_one();
                }
            }
        }
        Ok(call.resource(&self.settings.account_sid))
    }

    pub fn reports(&self) -> Vec<Value> {
        lock(&self.book).order.iter().map(|c| c.report()).collect()
    }

    /// Calls by status, and every number dialled more than once (with how often).
    pub fn summary(&self) -> Value {
        let book = lock(&self.book);
        let mut by_status: HashMap<&str, u64> = HashMap::new();
        let mut by_number: HashMap<&str, u64> = HashMap::new();
        for call in &book.order {
            *by_status.entry(call.status().as_str()).or_default() += 1;
            *by_number.entry(call.request.to.as_str()).or_default() += 1;
        }
        let mut twice: Vec<(&str, u64)> = by_number.into_iter().filter(|(_, n)| *n > 1).collect();
        twice.sort_unstable();
        json!({
            "placed": book.order.len(),
            "by_status": by_status,
            "dialed_more_than_once": twice.into_iter().map(|(to, n)| json!({"to": to, "calls": n})).collect::<Vec<_>>(),
            "media": {
                "webhooks": self.stats.launched.get(),
                "streamed": self.stats.admitted.get(),
                "completed": self.stats.completed.get(),
                "refused": self.stats.rejected_total(),
                "failed": self.stats.failed.get(),
                "frames_sent": self.stats.frames_sent.get(),
                "frames_echoed": self.stats.frames_echoed.get(),
                "errors": self.stats.errors(),
            },
        })
    }

    /// The call plan for requests to `url`'s origin (or `--target`), made once per origin.
    fn plan_for(&self, url: &str) -> Result<Arc<CallPlan>, String> {
        let origin = match &self.settings.target {
            Some(target) => target.clone(),
            None => {
                let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
                let host = parsed
                    .host_str()
                    .ok_or_else(|| format!("{url:?}: no host"))?;
                match parsed.port() {
                    Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
                    None => format!("{}://{host}", parsed.scheme()),
                }
            }
        };
        if let Some(plan) = lock(&self.plans).get(&origin) {
            return Ok(plan.clone());
        }
        let target = Target::with_reach(
            &origin,
            None,
            self.settings.auth_token.clone(),
            &self.settings.reach,
        )
        .map_err(|e| e.to_string())?;
        let plan = Arc::new(CallPlan {
            target,
            stream_only: false,
            duration: self.settings.talk,
            account_sid: self.settings.account_sid.clone(),
            dtmf: None,
            mark: None,
            drain: self.settings.drain,
            tenants: Vec::new(),
            patience: None,
        });
        lock(&self.plans).insert(origin, plan.clone());
        Ok(plan)
    }

    /// The call's life after the REST answer, to its final status callback.
    async fn play(self: Arc<Self>, call: Arc<PlacedCall>, dial_at: Instant) {
        let (events, queue) = mpsc::unbounded_channel();
        let sender = tokio::spawn(self.clone().send_callbacks(call.clone(), queue));
        let send = |event: Event, status: CallStatus| {
            if call.wants(event) {
                let _ = events.send((event, status));
            }
        };
        let ended = self.progress(&call, dial_at, &send).await;
        send(Event::Completed, ended);
        drop(events);
        let _ = sender.await;
    }

    /// Rings the call to its outcome; the status it ended with.
    async fn progress(
        &self,
        call: &PlacedCall,
        dial_at: Instant,
        send: &impl Fn(Event, CallStatus),
    ) -> CallStatus {
        if !call.wait_until(dial_at).await || !call.advance(CallStatus::Initiated) {
            return call.end(CallStatus::Canceled);
        }
        send(Event::Initiated, CallStatus::Initiated);
        if call.outcome == Outcome::Failed {
            return call.end(CallStatus::Failed);
        }
        if !call.advance(CallStatus::Ringing) {
            return call.end(CallStatus::Canceled);
        }
        send(Event::Ringing, CallStatus::Ringing);
        let timeout = Duration::from_secs(u64::from(call.request.timeout_secs));
        let no_answer_after = self.settings.no_answer.unwrap_or(timeout);
        // Twilio stops ringing at the request's Timeout: a callee slower than that is no-answer.
        let (ring_for, outcome) = match call.outcome {
            Outcome::NoAnswer => (no_answer_after, Outcome::NoAnswer),
            _ if self.settings.ring > timeout => (no_answer_after, Outcome::NoAnswer),
            other => (self.settings.ring, other),
        };
        if !call.wait_until(Instant::now() + ring_for).await {
            return call.end(CallStatus::Canceled);
        }
        match outcome {
            Outcome::Busy => return call.end(CallStatus::Busy),
            Outcome::NoAnswer => return call.end(CallStatus::NoAnswer),
            Outcome::Answered | Outcome::Failed => {}
        }
        if !call.advance(CallStatus::InProgress) {
            return call.end(CallStatus::Canceled);
        }
        send(Event::Answered, CallStatus::InProgress);
        let media = match self.plan_for(&call.request.url) {
            Err(why) => format!("failed:target: {why}"),
            Ok(plan) => {
                let seed = lock(&self.seeds).next_u64();
                let ids = CallIds {
                    call_sid: &call.sid,
                    account_sid: &self.settings.account_sid,
                    from: &call.request.from,
                    to: &call.request.to,
                    direction: "outbound-api",
                };
                match call::run_placed(
                    &plan,
                    &self.stats,
                    seed,
                    &ids,
                    &call.request.url,
                    &call.hangup,
                )
                .await
                {
                    CallEnd::Completed => "completed".to_owned(),
                    CallEnd::Refused(how) => format!("refused:{how}"),
                    CallEnd::EndedEarly => "ended_early".to_owned(),
                    CallEnd::Abandoned => "abandoned".to_owned(),
                    CallEnd::Overflowed => "overflowed".to_owned(),
                    CallEnd::Dropped => "dropped".to_owned(),
                    CallEnd::Failed { kind, message } => format!("failed:{kind}: {message}"),
                }
            }
        };
        lock(&call.progress).media = Some(media);
        call.end(CallStatus::Completed)
    }

    /// Sends the call's status callbacks one after another, in the order they happened.
    async fn send_callbacks(
        self: Arc<Self>,
        call: Arc<PlacedCall>,
        mut queue: mpsc::UnboundedReceiver<(Event, CallStatus)>,
    ) {
        let Some(url) = call.request.status_callback.clone() else {
            return;
        };
        let mut sequence = 0u64;
        while let Some((event, status)) = queue.recv().await {
            let sent_unix_us = clock::now_us();
            let params = self.callback_params(&call, event, status, sequence, sent_unix_us);
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = match self.plan_for(&url) {
                Err(why) => Err(why),
                Ok(plan) => {
                    match timeout(CALLBACK_TIMEOUT, webhook::post(&plan.target, &url, &pairs)).await
                    {
                        Err(_) => Err("timed out".to_owned()),
                        Ok(Err(err)) => Err(err.to_string()),
                        Ok(Ok((code, _))) => Ok(code),
                    }
                }
            };
            lock(&call.progress).callbacks.push(CallbackSent {
                sequence,
                event: event.name(),
                call_status: status.as_str(),
                sent_unix_us,
                http_status: answer.as_ref().ok().copied(),
                error: answer.err(),
            });
            sequence += 1;
        }
    }

    fn callback_params(
        &self,
        call: &PlacedCall,
        event: Event,
        status: CallStatus,
        sequence: u64,
        at_us: i64,
    ) -> Vec<(&'static str, String)> {
        let request = &call.request;
        let mut params = vec![
            ("AccountSid", self.settings.account_sid.clone()),
            ("ApiVersion", "2010-04-01".to_owned()),
            ("CallSid", call.sid.clone()),
            ("CallStatus", status.as_str().to_owned()),
            ("Called", request.to.clone()),
            ("Caller", request.from.clone()),
            ("CallbackSource", "call-progress-events".to_owned()),
            ("Direction", "outbound-api".to_owned()),
            ("From", request.from.clone()),
            ("SequenceNumber", sequence.to_string()),
            ("Timestamp", clock::rfc2822(at_us)),
            ("To", request.to.clone()),
        ];
        if event == Event::Completed {
            let duration = PlacedCall::duration_secs(&lock(&call.progress)).unwrap_or(0);
            params.push(("CallDuration", duration.to_string()));
            if let Some(code) = sip_response_code(status) {
                params.push(("SipResponseCode", code.to_owned()));
            }
        }
        params
    }
}
