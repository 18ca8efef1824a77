//! The shared state of one replica: configuration, the store, the live calls, metrics and lifecycle.
//! Built once at start-up and handed to every handler and background task as `Arc<App>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::live_calls::LiveCalls;
use crate::media_stream::StreamTimeouts;
use crate::metrics::Metrics;
use crate::state::now_rfc3339;
use crate::store::{CallStore, MemoryStore, RedisStore, StoreConfig, StoreError};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn CallStore>,
    pub calls: LiveCalls,
    pub metrics: Metrics,
    pub started_at: String,
    pub stream_timeouts: StreamTimeouts,
    /// Every media-stream task: axum does not wait for upgraded sockets, so shutdown does.
    pub streams: TaskTracker,
    /// Cancelled when the drain timeout passes: remaining streams end as `drain_timeout`.
    pub stop_streams: CancellationToken,
    draining: AtomicBool,
    token_seed: u128,
    next_token: AtomicU64,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn CallStore>) -> Arc<Self> {
        Self::with_stream_timeouts(config, store, StreamTimeouts::default())
    }

    /// As `new`, with other stream timeouts (tests use short ones).
    pub fn with_stream_timeouts(
        config: Config,
        store: Arc<dyn CallStore>,
        stream_timeouts: StreamTimeouts,
    ) -> Arc<Self> {
        let token_seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Arc::new(Self {
            config,
            store,
            calls: LiveCalls::default(),
            metrics: Metrics::new(),
            started_at: now_rfc3339(),
            stream_timeouts,
            streams: TaskTracker::new(),
            stop_streams: CancellationToken::new(),
            draining: AtomicBool::new(false),
            token_seed,
            next_token: AtomicU64::new(0),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    /// A lock token unique to this stream: the replica, this process's start, and a sequence, so a
    /// restarted replica with the same id and pid (pid 1 in a container) never reuses one.
    pub fn new_lock_token(&self) -> String {
        let seq = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}/{:x}/{seq}", self.config.replica_id, self.token_seed)
    }
}

/// The store the configuration asks for: Redis with `REDIS_URL`, else in-process.
pub fn build_store(config: &Config) -> Result<Arc<dyn CallStore>, StoreError> {
    let store_config = StoreConfig {
        limit: config.max_concurrent_calls,
        state_ttl: config.call_state_ttl,
        lock_ttl: config.call_lock_ttl,
        recovery_holdoff: config.recovery_holdoff(),
        ..StoreConfig::default()
    };
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisStore::connect_lazy(url, store_config)?),
        None => Arc::new(MemoryStore::new(store_config)),
    })
}
