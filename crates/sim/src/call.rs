//! One simulated call from ringing to hang-up: voice webhook, stream handshake, `connected` and
//! `start`, a 20 ms media frame on a fixed schedule, `stop` and close, every echo matched to the
//! instant its frame was sent; a stream lost mid-call is followed through `<Connect action>` as
//! Twilio does (docs/reference.md#after-stream), and the silence until the next echo measured; a
//! call put on hold waits in line as a caller does (docs/reference.md#waiting-room), coming back
//! to `/twilio/wait` until admitted, sent on, or out of patience.

use std::io;
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::conn::Conn;
use super::error::SimError;
use super::frames::{self, MediaFrame, StartIds};
use super::outbox::{Outbox, WriteNow};
use super::rng::Rng;
use super::stats::Stats;
use super::target::Target;
use super::tenants::Tenant;
use super::webhook::{self, AfterStream, Answer, CallIds, Connect, Hold, Visit};
use super::ws::{self, opcode};

/// Twilio sends 20 ms of audio per message.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);
/// A frame written later than this behind its schedule is counted late.
pub const LATE_AFTER: Duration = Duration::from_millis(5);
/// Send instants kept for matching echoes: 256 frames are 5.12 s, far beyond any sane echo.
const SENT_RING: usize = 256;
/// Echoes are ~300 bytes; a few fit, and the buffer grows only for an unusual large message.
const RECV_BUFFER: usize = 4 * 1024;
/// The server's own limit on what it accepts; nothing it sends should be larger.
const MAX_SERVER_FRAME: usize = 64 * 1024;
/// What may queue for a server that stopped reading before the call is failed.
const MAX_PENDING: usize = 256 * 1024;
/// Close code the server uses to refuse a stream over the limit (docs/reference.md#media-stream).
const TRY_AGAIN_LATER: u16 = 1013;
/// Streams one call may open in all: the server's `RESUME_LIMIT` bounds continuations long before.
const MAX_STREAMS_PER_CALL: usize = 16;

/// What every call of a run shares.
pub struct CallPlan {
    pub target: Target,
    /// Open the stream directly (no webhook): for servers that only speak WebSocket.
    pub stream_only: bool,
    pub duration: Duration,
    pub account_sid: String,
    pub dtmf: Option<String>,
    pub mark: Option<String>,
    /// How long to wait after `stop` for the last echoes and the server's close.
    pub drain: Duration,
    /// The tenants calls are spread over (`--tenants`); empty: every call is `account_sid`'s, to
    /// the one number.
    pub tenants: Vec<Tenant>,
    /// How long a caller on hold waits before hanging up (`--patience`); `None`: as long as the
    /// server keeps them.
    pub patience: Option<Patience>,
}

/// `--patience SECS` or `MIN-MAX`: each caller's patience, spread uniformly over the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    pub min: Duration,
    pub max: Duration,
}

impl Patience {
    pub fn parse(text: &str) -> Result<Self, String> {
        let secs = |v: &str| match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!("{v:?} is not a number of seconds in (0, 86400]")),
        };
        let (min, max) = match text.split_once('-') {
            Some((min, max)) => (secs(min)?, secs(max)?),
            None => (secs(text)?, secs(text)?),
        };
        if min > max {
            return Err(format!(
                "{text:?}: the range's low end is above its high end"
            ));
        }
        Ok(Self { min, max })
    }

    /// One caller's patience: uniform over the range, from the call's own seeded generator.
    fn pick(&self, rng: &mut Rng) -> Duration {
        let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.min + (self.max - self.min).mul_f64(unit)
    }
}

impl CallPlan {
    /// Media frames per call (at least one).
    pub fn frames(&self) -> u32 {
        let n = self.duration.as_micros() / FRAME_INTERVAL.as_micros();
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    }
}

enum Outcome {
    Completed,
    /// Which reject mode refused it (`http_503`, `twiml`, `busy`, `stream_1013`).
    Refused(&'static str),
    /// The call ended before its planned duration: a lost stream answered with the fallback or a
    /// hang-up (counted in `ended_early`).
    EndedEarly,
    /// Put on hold, the caller hung up before their turn (`--patience`).
    Abandoned,
    /// Put on hold, the caller was sent to the overflow.
    Overflowed,
    /// Put on hold, the caller was hung up on by the line (`<Hangup/>` to a visit).
    Dropped,
}

/// How one stream of a call ended.
enum StreamEnd {
    Done(Outcome),
    /// The server closed or lost the stream without our `stop`, at `at`; `next` is the first
    /// chunk not yet sent.
    Lost {
        next: u32,
        at: Instant,
    },
}

/// Runs one call (of tenant `tenant`, by index into the plan's) to its end and records what
/// happened in `stats`.
pub async fn run(plan: &CallPlan, stats: &Stats, seed: u64, tenant: Option<usize>) {
    let mut rng = Rng::new(seed);
    let call_sid = rng.sid("CA");
    let mut ids = CallIds::inbound(&call_sid, &plan.account_sid);
    if let Some(t) = tenant.and_then(|i| plan.tenants.get(i)) {
        ids.account_sid = &t.account_sid;
        ids.to = &t.to;
    }
    let patience = plan.patience.map(|p| p.pick(&mut rng));
    let voice_url = plan.target.voice_url();
    let leg = Leg {
        ids: &ids,
        voice_url: &voice_url,
        hangup: None,
        tenant,
        patience,
    };
    follow(plan, stats, &mut rng, &leg).await;
}

/// What one call is to the simulator: its form fields, where its voice webhook is, what makes
/// the callee hang up early (a placed call only), its tenant and how long it waits on hold.
struct Leg<'a> {
    ids: &'a CallIds<'a>,
    voice_url: &'a str,
    hangup: Option<&'a Notify>,
    tenant: Option<usize>,
    patience: Option<Duration>,
}

/// How a call followed from its voice webhook ended (what the REST double reports of a call it
/// placed and saw answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// Streamed to its planned end, or until hung up.
    Completed,
    /// The webhook or the stream refused it: which reject mode said so.
    Refused(&'static str),
    /// A stream lost mid-call and not continued (the fallback or a hang-up).
    EndedEarly,
    /// Hung up while on hold.
    Abandoned,
    /// Sent from the hold to the overflow.
    Overflowed,
    /// Hung up on by the line while on hold.
    Dropped,
    /// Something broke: the error's kind and message.
    Failed { kind: String, message: String },
}

/// Follows a call Twilio placed through its REST API and saw answered (the REST double's): the
/// voice webhook at `voice_url` with `ids` (`Direction=outbound-api`), then the stream for the
/// plan's duration, or until `hangup` is notified (the callee hangs up: `stop`, then a close).
pub async fn run_placed(
    plan: &CallPlan,
    stats: &Stats,
    seed: u64,
    ids: &CallIds<'_>,
    voice_url: &str,
    hangup: &Notify,
) -> CallEnd {
    let mut rng = Rng::new(seed);
    let leg = Leg {
        ids,
        voice_url,
        hangup: Some(hangup),
        tenant: None,
        patience: None,
    };
    follow(plan, stats, &mut rng, &leg).await
}

async fn follow(plan: &CallPlan, stats: &Stats, rng: &mut Rng, leg: &Leg<'_>) -> CallEnd {
    stats.launched.inc();
    let tenant = stats.tenant(leg.tenant);
    tenant.inspect(|t| t.launched.inc());
    let mut settled = Settled::new(stats);
    match attempt(plan, stats, rng, leg, &mut settled).await {
        Ok(Outcome::Completed) => {
            stats.completed.inc();
            tenant.inspect(|t| t.completed.inc());
            CallEnd::Completed
        }
        Ok(Outcome::Refused(label)) => {
            tenant.inspect(|t| t.rejected.inc());
            CallEnd::Refused(label)
        }
        Ok(Outcome::EndedEarly) => CallEnd::EndedEarly,
        Ok(Outcome::Abandoned) => CallEnd::Abandoned,
        Ok(Outcome::Overflowed) => CallEnd::Overflowed,
        Ok(Outcome::Dropped) => CallEnd::Dropped,
        Err(err) => {
            stats.failed.inc();
            tenant.inspect(|t| t.failed.inc());
            stats.failure(&err);
            CallEnd::Failed {
                kind: err.kind(),
                message: err.to_string(),
            }
        }
    }
}

/// Counts the call as settled (done setting up, whatever the result) exactly once.
struct Settled<'a> {
    stats: &'a Stats,
    done: bool,
}

impl<'a> Settled<'a> {
    fn new(stats: &'a Stats) -> Self {
        Self { stats, done: false }
    }

    fn now(&mut self) {
        if !self.done {
            self.done = true;
            self.stats.settled.inc();
        }
    }
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

async fn attempt(
    plan: &CallPlan,
    stats: &Stats,
    rng: &mut Rng,
    leg: &Leg<'_>,
    settled: &mut Settled<'_>,
) -> Result<Outcome, SimError> {
    let &Leg {
        ids,
        voice_url,
        hangup,
        ..
    } = leg;
    let call_sid = ids.call_sid;
    let mut connect = if plan.stream_only {
        Connect {
            stream_url: plan.target.default_stream_url(),
            ..Connect::default()
        }
    } else {
        let asked = Instant::now();
        let answer = webhook::request_voice_at(&plan.target, voice_url, ids).await?;
        stats.line.webhook_latency.record(micros_since(asked));
        match answer {
            (Answer::Connect(url), connect) => connect.unwrap_or(Connect {
                stream_url: url,
                ..Connect::default()
            }),
            (Answer::Rejected(refusal), _) => {
                stats.rejected(refusal);
                return Ok(Outcome::Refused(refusal.label()));
            }
            (Answer::Wait(hold), _) => match wait_in_line(plan, stats, leg, hold).await? {
                InLine::Admitted(connect) => connect,
                InLine::Abandoned => return Ok(Outcome::Abandoned),
                InLine::Overflowed => return Ok(Outcome::Overflowed),
                InLine::Dropped => return Ok(Outcome::Dropped),
            },
        }
    };
    let mut t0: Option<Instant> = None;
    let mut next = 1u32;
    let mut lost_at: Option<Instant> = None;
    let mut streaming = None;
    let result = async {
        for _ in 0..MAX_STREAMS_PER_CALL {
            let stream_sid = rng.sid("MZ");
            let request = plan
                .target
                .stream_request(&connect.stream_url)
                .map_err(|why| SimError::BadStreamUrl(connect.stream_url.clone(), why))?;
            let (mut conn, early) = ws::connect(&plan.target, &request, rng).await?;
            if streaming.is_none() {
                stats.admitted.inc();
                stats.tenant(leg.tenant).inspect(|t| t.admitted.inc());
                stats.streaming.inc();
                streaming = Some(StreamingGuard(stats));
                settled.now();
            }
            let start_ids = StartIds {
                call_sid,
                stream_sid: &stream_sid,
                account_sid: ids.account_sid,
            };
            let mut call = Call::new(plan, stats, &start_ids, rng.bytes(), early, hangup);
            call.echoes.gap_since = lost_at;
            let start = frames::start(&start_ids, &connect.parameters);
            let began = *t0.get_or_insert_with(Instant::now);
            let (at, first) = match call
                .stream(&mut conn, &start_ids, &start, began, next)
                .await?
            {
                StreamEnd::Done(outcome) => return Ok(outcome),
                StreamEnd::Lost { next, at } => (at, next),
            };
            next = first;
            let Some(action) = connect.action_url.clone() else {
                return Err(SimError::Eof);
            };
            stats.streams_lost.inc();
            lost_at = Some(at);
            match webhook::post_action(&plan.target, &action, ids).await? {
                AfterStream::Continue(more) => {
                    stats.continued.inc();
                    connect = more;
                }
                AfterStream::Fallback => {
                    stats.after_stream_fallback.inc();
                    stats.ended_early.inc();
                    return Ok(Outcome::EndedEarly);
                }
                AfterStream::Hangup => {
                    stats.after_stream_hangup.inc();
                    stats.ended_early.inc();
                    return Ok(Outcome::EndedEarly);
                }
            }
        }
        Err(SimError::Protocol("too many streams for one call"))
    }
    .await;
    drop(streaming);
    result
}

/// How a call's time on hold ended.
enum InLine {
    /// `<Connect><Stream>`: the call goes on as one admitted at once.
    Admitted(Connect),
    Abandoned,
    Overflowed,
    /// The line answered a visit with a bare `<Hangup/>`: it had let the caller go.
    Dropped,
}

/// Waits on hold as Twilio plays it, then visits `/twilio/wait`, again and again: until the
/// visit connects the call, sends it to the overflow, or the caller's patience runs out (then
/// the caller hangs up: the final status callback, and no more visits).
async fn wait_in_line(
    plan: &CallPlan,
    stats: &Stats,
    leg: &Leg<'_>,
    mut hold: Hold,
) -> Result<InLine, SimError> {
    let joined = Instant::now();
    for line in stats.lines(leg.tenant) {
        line.joined.inc();
        line.waiting.inc();
    }
    let _in_line = InLineGuard(stats, leg.tenant);
    let gives_up = leg.patience.map(|patience| joined + patience);
    loop {
        let back = Instant::now() + hold.lasts;
        if let Some(at) = gives_up.filter(|at| *at <= back) {
            sleep_until(at).await;
            stats.lines(leg.tenant).for_each(|l| l.abandoned.inc());
            // Twilio tells the server at once; a refused callback leaves the caller to the
            // line's own timeout, and is counted.
            match webhook::post_status(&plan.target, leg.ids, "completed").await {
                Ok(code) if (200..300).contains(&code) => {}
                Ok(code) => stats.error(format!("status_callback_http_{code}")),
                Err(err) => stats.error(format!("status_callback_{}", err.kind())),
            }
            return Ok(InLine::Abandoned);
        }
        sleep_until(back).await;
        stats.lines(leg.tenant).for_each(|l| l.visits.inc());
        let asked = Instant::now();
        let visit = webhook::post_wait(&plan.target, &hold.wait_url, leg.ids).await?;
        stats.line.visit_latency.record(micros_since(asked));
        match visit {
            Visit::Hold(next) => hold = next,
            Visit::Admitted(connect) => {
                let waited = micros_since(joined);
                for line in stats.lines(leg.tenant) {
                    line.admitted.inc();
                    line.wait.record(waited);
                }
                return Ok(InLine::Admitted(connect));
            }
            Visit::Overflow => {
                stats.lines(leg.tenant).for_each(|l| l.overflowed.inc());
                return Ok(InLine::Overflowed);
            }
            Visit::Dropped => {
                stats.lines(leg.tenant).for_each(|l| l.dropped.inc());
                return Ok(InLine::Dropped);
            }
        }
    }
}

fn micros_since(at: Instant) -> u64 {
    u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Counts the call as in line until it leaves it, however it leaves.
struct InLineGuard<'a>(&'a Stats, Option<usize>);

impl Drop for InLineGuard<'_> {
    fn drop(&mut self) {
        self.0.lines(self.1).for_each(|l| l.waiting.dec());
    }
}

/// Counts the call as streaming from its first stream to its end, however it ends.
struct StreamingGuard<'a>(&'a Stats);

impl Drop for StreamingGuard<'_> {
    fn drop(&mut self) {
        self.0.streaming.dec();
    }
}

/// A streaming call's state, apart from its connection and what waits to go out on it.
struct Call<'a> {
    plan: &'a CallPlan,
    stats: &'a Stats,
    /// Notified when the callee hangs up before the planned end (a placed call ended through the
    /// REST API).
    hangup: Option<&'a Notify>,
    mask: [u8; 4],
    media: MediaFrame,
    rx: Receiver,
    echoes: Echoes<'a>,
    sequence: u64,
}

impl<'a> Call<'a> {
    fn new(
        plan: &'a CallPlan,
        stats: &'a Stats,
        ids: &StartIds<'_>,
        mask: [u8; 4],
        early: Vec<u8>,
        hangup: Option<&'a Notify>,
    ) -> Self {
        Self {
            plan,
            stats,
            hangup,
            mask,
            media: MediaFrame::new(ids.stream_sid, mask),
            rx: Receiver::new(&early),
            echoes: Echoes::new(stats),
            sequence: 1,
        }
    }

    /// Streams from chunk `first` on the call's schedule (which began at `t0`) to the call's end,
    /// or until the server closes or loses the stream.
    async fn stream(
        &mut self,
        conn: &mut Conn,
        ids: &StartIds<'_>,
        start: &str,
        t0: Instant,
        first: u32,
    ) -> Result<StreamEnd, SimError> {
        match conn {
            // The socket's own halves: no lock between reading and writing.
            Conn::Plain(tcp) => {
                let (rd, wr) = tcp.split();
                self.stream_over(rd, wr, ids, start, t0, first).await
            }
            Conn::Tls(tls) => {
                let (rd, wr) = tokio::io::split(&mut **tls);
                self.stream_over(rd, wr, ids, start, t0, first).await
            }
        }
    }

    /// [`Call::stream`] over a connection's read and write halves, whichever kind they are.
    async fn stream_over<R, W>(
        &mut self,
        mut rd: R,
        wr: W,
        ids: &StartIds<'_>,
        start: &str,
        t0: Instant,
        first: u32,
    ) -> Result<StreamEnd, SimError>
    where
        R: AsyncRead + Unpin,
        W: WriteNow,
    {
        let mut out = Outbox::new(wr, MAX_PENDING);
        let hello = [frames::connected(), start.to_owned()];
        for text in &hello {
            out.send(&frames::text_frame(text, self.mask))?;
        }

        let frames_total = self.plan.frames();
        let midpoint = (frames_total / 2).max(1);
        self.echoes.t0 = t0;
        let due = |chunk: u32| t0 + FRAME_INTERVAL * (chunk - 1);
        // Audio due while no stream was open is gone, as it is on a real call: a continued
        // stream picks up the schedule where it stands now.
        let mut next = first;
        let now = Instant::now();
        while next > 1 && next <= frames_total && due(next) + FRAME_INTERVAL < now {
            self.stats.frames_skipped.inc();
            next += 1;
        }
        let sleep = sleep_until(due(next));
        tokio::pin!(sleep);
        match self
            .frames(
                &mut rd, &mut out, ids, &due, &mut next, midpoint, &mut sleep,
            )
            .await
        {
            Ok(Some(outcome)) => return Ok(StreamEnd::Done(outcome)),
            Ok(None) => {}
            Err(SimError::Eof | SimError::ClosedEarly(_)) => {
                return Ok(StreamEnd::Lost {
                    next,
                    at: Instant::now(),
                });
            }
            Err(SimError::Io { source, .. }) if is_reset(&source) => {
                return Ok(StreamEnd::Lost {
                    next,
                    at: Instant::now(),
                });
            }
            Err(err) => return Err(err),
        }
        self.hang_up(&mut rd, &mut out, ids)
            .await
            .map(StreamEnd::Done)
    }

    /// Sends every frame on schedule while reading what comes back. `Ok(None)`: all sent, time to
    /// hang up; `Ok(Some)`: the stream was refused.
    #[allow(clippy::too_many_arguments)]
    async fn frames<R: AsyncRead + Unpin, W: WriteNow>(
        &mut self,
        rd: &mut R,
        out: &mut Outbox<W>,
        ids: &StartIds<'_>,
        due: &impl Fn(u32) -> Instant,
        next: &mut u32,
        midpoint: u32,
        sleep: &mut std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<Option<Outcome>, SimError> {
        let frames_total = self.plan.frames();
        // Deadlines come from `t0`, never from the previous send, so pacing cannot drift; a tick
        // that fires late sends every frame that is due at once (a burst), as Twilio would.
        loop {
            tokio::select! {
                biased;
                read = rd.read(self.rx.spare()?) => {
                    let n = read.map_err(SimError::io("stream"))?;
                    if n == 0 {
                        return Err(SimError::Eof);
                    }
                    if let Some(code) = self.received(n, out)? {
                        return match code {
                            TRY_AGAIN_LATER => {
                                self.stats.rejected_stream.inc();
                                Ok(Some(Outcome::Refused("stream_1013")))
                            }
                            code => Err(SimError::ClosedEarly(code)),
                        };
                    }
                }
                drained = out.drain(), if out.busy() => drained?,
                () = hung_up(self.hangup) => return Ok(None),
                () = sleep.as_mut() => {
                    if *next > frames_total {
                        return Ok(None);
                    }
                    let now = Instant::now();
                    while *next <= frames_total && due(*next) <= now {
                        if now - due(*next) > LATE_AFTER {
                            self.stats.frames_late.inc();
                        }
                        self.sequence += 1;
                        let wire = self.media.frame(self.sequence, *next);
                        out.send(wire)?;
                        self.echoes.sent(*next, now);
                        self.stats.frames_sent.inc();
                        if *next == midpoint {
                            self.extras(out, ids.stream_sid)?;
                        }
                        *next += 1;
                    }
                    // One slot after the last frame the call hangs up.
                    sleep.as_mut().reset(due(*next));
                }
            }
        }
    }

    /// Twilio's optional messages, once mid-call.
    fn extras<W: WriteNow>(
        &mut self,
        out: &mut Outbox<W>,
        stream_sid: &str,
    ) -> Result<(), SimError> {
        if let Some(digit) = &self.plan.dtmf {
            self.sequence += 1;
            let text = frames::dtmf(self.sequence, stream_sid, digit);
            out.send(&frames::text_frame(&text, self.mask))?;
            self.stats.dtmf_sent.inc();
        }
        if let Some(name) = &self.plan.mark {
            self.sequence += 1;
            let text = frames::mark(self.sequence, stream_sid, name);
            out.send(&frames::text_frame(&text, self.mask))?;
            self.stats.marks_sent.inc();
        }
        Ok(())
    }

    /// `stop` and a close frame back to back, as Twilio does, then whatever the server still sends
    /// until it closes (or `drain` passes): echoes in flight count, nothing is cut short.
    async fn hang_up<R: AsyncRead + Unpin, W: WriteNow>(
        &mut self,
        rd: &mut R,
        out: &mut Outbox<W>,
        ids: &StartIds<'_>,
    ) -> Result<Outcome, SimError> {
        self.sequence += 1;
        let mut bye = frames::text_frame(&frames::stop(self.sequence, ids), self.mask);
        bye.extend_from_slice(&frames::close(1000, self.mask));
        out.send(&bye)?;
        let deadline = Instant::now() + self.plan.drain;
        loop {
            let step = async {
                tokio::select! {
                    read = rd.read(self.rx.spare()?) => Ok::<_, SimError>(Some(read)),
                    drained = out.drain(), if out.busy() => drained.map(|()| None),
                }
            };
            let read = match timeout_at(deadline, step).await {
                Err(_) => {
                    self.stats.error("no_close_after_stop".into());
                    return Ok(Outcome::Completed);
                }
                Ok(result) => result?,
            };
            match read {
                None => {}
                // The server hangs up once it has the stop; a reset is as good as a FIN here.
                Some(Ok(0)) => return Ok(Outcome::Completed),
                Some(Err(err)) if is_reset(&err) => return Ok(Outcome::Completed),
                Some(Err(err)) => return Err(SimError::io("drain")(err)),
                Some(Ok(n)) if self.received(n, out)?.is_some() => return Ok(Outcome::Completed),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Handles `n` new bytes: every complete frame in the buffer. Returns the close code if the
    /// server closed the WebSocket.
    fn received<W: WriteNow>(
        &mut self,
        n: usize,
        out: &mut Outbox<W>,
    ) -> Result<Option<u16>, SimError> {
        self.rx.filled(n);
        let now = Instant::now();
        while let Some(frame) = ws::parse_frame(self.rx.data(), MAX_SERVER_FRAME)? {
            let payload = &self.rx.data()[frame.payload.0..frame.payload.1];
            if !frame.fin || frame.opcode == opcode::CONTINUATION {
                return Err(SimError::Protocol("fragmented message"));
            }
            match frame.opcode {
                opcode::TEXT => self.echoes.text(payload, now),
                opcode::CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok(Some(code));
                }
                opcode::PING => {
                    let mut pong = Vec::with_capacity(payload.len() + 14);
                    ws::encode_frame(&mut pong, opcode::PONG, payload, self.mask);
                    out.send(&pong)?;
                }
                opcode::PONG => {}
                _ => self.stats.other_messages.inc(),
            }
            self.rx.consume(frame.consumed);
        }
        Ok(None)
    }
}

/// Resolves when `hangup` is notified; never without one.
async fn hung_up(hangup: Option<&Notify>) {
    match hangup {
        Some(hangup) => hangup.notified().await,
        None => std::future::pending().await,
    }
}

/// The connection went away under the stream: a reset, or (over TLS) a close without
/// close_notify, which is what a crashed TLS server leaves; both count as the peer's close.
fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A per-call receive buffer, allocated once and reused; frames are parsed where they land.
struct Receiver {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Receiver {
    fn new(early: &[u8]) -> Self {
        let mut buf = vec![0u8; RECV_BUFFER.max(early.len() * 2)];
        buf[..early.len()].copy_from_slice(early);
        Self {
            buf,
            start: 0,
            end: early.len(),
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Room for the next read: moves unparsed bytes to the front, and grows only for a frame
    /// larger than the buffer.
    fn spare(&mut self) -> Result<&mut [u8], SimError> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_SERVER_FRAME + 16 {
                self.buf
                    .resize((self.buf.len() * 2).min(MAX_SERVER_FRAME + 16), 0);
            } else {
                return Err(SimError::Protocol("frame larger than the receive limit"));
            }
        }
        Ok(&mut self.buf[self.end..])
    }
}

/// Send instants of recent frames, and matching echoes against them.
struct Echoes<'a> {
    stats: &'a Stats,
    t0: Instant,
    /// `(chunk, microseconds since t0)`, indexed by chunk; chunk 0 marks a free slot.
    sent: Box<[(u32, u32)]>,
    /// The highest chunk echoed so far: an echo below it came back out of order.
    last_echoed: u32,
    /// On a continued stream: when the lost one went, until the first echo ends the silence.
    gap_since: Option<Instant>,
}

static MEDIA_EVENT: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(br#""event":"media""#));
static MARK_EVENT: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(br#""event":"mark""#));
static PAYLOAD_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(br#""payload":""#));

impl<'a> Echoes<'a> {
    fn new(stats: &'a Stats) -> Self {
        Self {
            stats,
            t0: Instant::now(),
            sent: vec![(0, 0); SENT_RING].into_boxed_slice(),
            last_echoed: 0,
            gap_since: None,
        }
    }

    fn sent(&mut self, chunk: u32, at: Instant) {
        self.sent[chunk as usize % SENT_RING] = (chunk, self.micros(at));
    }

    fn micros(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.t0).as_micros()).unwrap_or(u32::MAX)
    }

    /// One text message from the server: an echoed frame, a mark, or something else.
    fn text(&mut self, text: &[u8], now: Instant) {
        // The server's messages have one shape; scanning for it costs far less than parsing JSON.
        if MEDIA_EVENT.find(text).is_some()
            && let Some(at) = PAYLOAD_KEY.find(text)
        {
            self.echo(&text[at + 11..], now);
        } else if MARK_EVENT.find(text).is_some() {
            self.stats.marks_echoed.inc();
        } else {
            self.stats.other_messages.inc();
        }
    }

    fn echo(&mut self, payload: &[u8], now: Instant) {
        let Some(chunk) = frames::tag_of(payload) else {
            self.stats.echoes_unmatched.inc();
            return;
        };
        let slot = &mut self.sent[chunk as usize % SENT_RING];
        if slot.0 != chunk || chunk == 0 {
            self.stats.echoes_unmatched.inc();
            return;
        }
        let sent_at = slot.1;
        slot.0 = 0;
        if chunk < self.last_echoed {
            self.stats.echoes_reordered.inc();
        }
        self.last_echoed = self.last_echoed.max(chunk);
        if let Some(since) = self.gap_since.take() {
            let gap = now.saturating_duration_since(since).as_micros();
            self.stats
                .resume_gap
                .record(u64::try_from(gap).unwrap_or(u64::MAX));
        }
        let latency = self.micros(now).saturating_sub(sent_at);
        self.stats.echo_latency.record(u64::from(latency));
        self.stats.frames_echoed.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_is_a_number_or_a_range_spread_per_call() {
        let fixed = Patience::parse("7.5").unwrap();
        assert_eq!(fixed.pick(&mut Rng::new(1)), Duration::from_millis(7500));
        let range = Patience::parse("5-60").unwrap();
        let mut seeds = Rng::new(23);
        let picks: Vec<f64> = (0..200)
            .map(|_| range.pick(&mut Rng::new(seeds.next_u64())).as_secs_f64())
            .collect();
        assert!(picks.iter().all(|p| (5.0..=60.0).contains(p)), "{picks:?}");
        let low = picks.iter().filter(|p| **p < 32.5).count();
        assert!(
            (70..=130).contains(&low),
            "about half below the middle: {low}"
        );
        assert!(Patience::parse("9-3").is_err());
        assert!(Patience::parse("0").is_err());
        assert!(Patience::parse("x-3").is_err());
    }
}
