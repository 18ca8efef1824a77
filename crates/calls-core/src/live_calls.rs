//! The calls whose media streams are live on this replica: what the renewal tick renews and flushes,
//! what drain waits for. Per-frame counters are atomics so the media loop never takes a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::call_sid::CallSid;
use crate::state::{CallState, EndReason};

pub struct LiveCall {
    pub call_sid: CallSid,
    pub lock_token: String,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    /// Everything but the counters; touched on start, dtmf, mark and end only.
    details: Mutex<CallState>,
    /// Cancelled to end the stream from outside (status callback, lock lost); the reason is
    /// in `ended_by`, set first.
    cancel: CancellationToken,
    ended_by: OnceLock<EndReason>,
}

impl LiveCall {
    pub fn new(call_sid: CallSid, lock_token: String, state: CallState) -> Self {
        Self {
            call_sid,
            lock_token,
            frames_in: AtomicU64::new(state.frames_in),
            frames_out: AtomicU64::new(state.frames_out),
            bytes_in: AtomicU64::new(state.bytes_in),
            details: Mutex::new(state),
            cancel: CancellationToken::new(),
            ended_by: OnceLock::new(),
        }
    }

    #[inline]
    pub fn count_in(&self, bytes: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes the state (a mark, a digit); what a caller grows is then capped
    /// (docs/reference.md#admission), so the state flushed every tick never grows with the call's
    /// length.
    pub fn update(&self, f: impl FnOnce(&mut CallState)) {
        let mut details = self.details();
        f(&mut details);
        details.cap_growth();
    }

    /// The state as it should be flushed now, counters included.
    pub fn snapshot(&self) -> CallState {
        let mut state = self.details().clone();
        state.frames_in = self.frames_in.load(Ordering::Relaxed);
        state.frames_out = self.frames_out.load(Ordering::Relaxed);
        state.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        state
    }

    /// The final state: ended with `reason` unless it already ended.
    pub fn ended(&self, reason: EndReason) -> CallState {
        self.update(|s| {
            s.end(reason);
        });
        self.snapshot()
    }

    /// Asks the stream serving this call to end with `reason`; the first reason given wins.
    pub fn end_from_outside(&self, reason: EndReason) {
        let _ = self.ended_by.set(reason);
        self.cancel.cancel();
    }

    /// Resolves once [`Self::end_from_outside`] was called.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Why the stream was asked to end from outside, if it was.
    pub fn ended_by(&self) -> Option<EndReason> {
        self.ended_by.get().copied()
    }

    fn details(&self) -> MutexGuard<'_, CallState> {
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Default)]
pub struct LiveCalls {
    calls: Mutex<HashMap<CallSid, Arc<LiveCall>>>,
}

impl LiveCalls {
    /// Registers a call; false if a stream for it is already live on this replica.
    pub fn insert(&self, call: Arc<LiveCall>) -> bool {
        let mut calls = self.lock();
        if calls.contains_key(&call.call_sid) {
            return false;
        }
        calls.insert(call.call_sid.clone(), call);
        true
    }

    /// Puts `call` in place of a stream of the same call live here, returning the one it
    /// replaced: a continuation that took the call over from a stream this replica still serves.
    pub fn replace(&self, call: Arc<LiveCall>) -> Option<Arc<LiveCall>> {
        self.lock().insert(call.call_sid.clone(), call)
    }

    /// Forgets the call's stream if it is the one holding `lock_token`: a stream replaced by a
    /// continuation must not forget its successor.
    pub fn remove(&self, call_sid: &CallSid, lock_token: &str) {
        let mut calls = self.lock();
        if calls
            .get(call_sid)
            .is_some_and(|live| live.lock_token == lock_token)
        {
            calls.remove(call_sid);
        }
    }

    pub fn get(&self, call_sid: &CallSid) -> Option<Arc<LiveCall>> {
        self.lock().get(call_sid).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn all(&self) -> Vec<Arc<LiveCall>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CallSid, Arc<LiveCall>>> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
