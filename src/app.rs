//! The shared state of one replica: configuration, the call core, metrics and the lifecycle.
//! Built once at start-up and handed to every handler and background task as `Arc<App>`.

use std::sync::Arc;

use calls_core::calls::{Calls, CallsConfig};
use calls_core::store::{CallStore, MemoryStore, RedisStore, StoreConfig, StoreError};

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

pub struct App {
    pub config: Config,
    pub calls: Calls,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn CallStore>) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        metrics
            .max_concurrent
            .set(i64::try_from(config.max_concurrent_calls).unwrap_or(i64::MAX));
        let calls = Calls::new(calls_config(&config), store, metrics.clone());
        Arc::new(Self {
            config,
            calls,
            metrics,
            lifecycle: Lifecycle::default(),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }

    pub fn start_draining(&self) {
        if self.lifecycle.start_draining() {
            self.metrics.draining.set(1);
        }
    }
}

fn calls_config(config: &Config) -> CallsConfig {
    CallsConfig {
        replica_id: config.replica_id.clone(),
        max_concurrent_calls: config.max_concurrent_calls,
        reservation: config.reservation,
        call_lease: config.call_lease,
        renew_interval: config.renew_interval,
    }
}

/// The store the configuration asks for: Redis with `REDIS_URL`, else in-process.
///
/// # Errors
///
/// A `REDIS_URL` the Redis client cannot use.
pub fn build_store(config: &Config) -> Result<Arc<dyn CallStore>, StoreError> {
    let store_config = StoreConfig {
        limit: config.max_concurrent_calls,
        state_ttl: config.call_state_ttl,
        lock_ttl: config.call_lock_ttl,
        recovery_holdoff: config.recovery_holdoff(),
        call_lease: config.call_lease,
        ..StoreConfig::default()
    };
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisStore::connect_lazy(url, store_config)?),
        None => Arc::new(MemoryStore::new(store_config)),
    })
}
