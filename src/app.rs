//! The shared state of one replica: configuration, the call core, metrics and the lifecycle.
//! Built once at start-up and handed to every handler and background task as `Arc<App>`.

use std::sync::Arc;

use calls_core::calls::{Calls, CallsConfig};
use calls_core::store::{CallStore, MemoryStore, RedisStore, RedisTls, StoreConfig, StoreError};

use crate::config::{Config, TenantKey};
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
        let metrics = Arc::new(Metrics::with_tenant_series(config.tenant_metrics));
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
        tenant_key: match config.tenant_key {
            TenantKey::None => calls_core::tenant::TenantKey::None,
            TenantKey::AccountSid => calls_core::tenant::TenantKey::AccountSid,
            TenantKey::To => calls_core::tenant::TenantKey::To,
        },
        default_tenant_limit: config.default_tenant_limit,
        resume_limit: config.resume_limit,
    }
}

/// The store the configuration asks for: Redis with `REDIS_URL`, else in-process.
///
/// # Errors
///
/// A `REDIS_URL` the Redis client cannot use, or a `REDIS_TLS_*` file it cannot read.
pub fn build_store(config: &Config) -> Result<Arc<dyn CallStore>, StoreError> {
    // Every field from the configuration, none from `StoreConfig::default`: one source of defaults.
    let store_config = StoreConfig {
        limit: config.max_concurrent_calls,
        state_ttl: config.call_state_ttl,
        lock_ttl: config.call_lock_ttl,
        recovery_holdoff: config.recovery_holdoff(),
        op_timeout: config.store_op_timeout,
        call_lease: config.call_lease,
        default_tenant_limit: config.default_tenant_limit,
        tls: config
            .redis
            .as_ref()
            .map(|redis| store_tls(&redis.tls))
            .unwrap_or_default(),
    };
    Ok(match &config.redis {
        Some(redis) => Arc::new(RedisStore::connect_lazy(redis.url.expose(), store_config)?),
        None => Arc::new(MemoryStore::new(store_config)),
    })
}

/// The configuration's checked `REDIS_TLS_*` files, as the store takes them.
fn store_tls(tls: &crate::config::RedisTls) -> RedisTls {
    RedisTls {
        ca_file: tls.ca_file.clone(),
        cert_file: tls.client_cert.as_ref().map(|c| c.cert_file.clone()),
        key_file: tls.client_cert.as_ref().map(|c| c.key_file.clone()),
    }
}
