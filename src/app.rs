//! One replica's parts, built once at start-up: configuration, the call core, metrics and the
//! lifecycle. The HTTP handlers read it; every other part gets only what it needs from it.

use std::sync::Arc;

use calls_core::calls::{Calls, CallsConfig};
use calls_core::store::{CallStore, MemoryStore, RedisStore, StoreConfig, StoreError};
use twilio::twiml::PublicUrls;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::whatsapp::WhatsApp;

pub struct App {
    config: Config,
    calls: Arc<Calls>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    /// `Some` with `WHATSAPP_FROM` (docs/reference.md#waiting-room).
    whatsapp: Option<Arc<WhatsApp>>,
    /// Twilio's REST client, where credentials are set (docs/reference.md#outbound).
    twilio_client: Option<Result<twilio_api::TwilioClient, String>>,
    /// Wakes this replica's outbound dialer when a call is queued here.
    dialer_wake: Arc<tokio::sync::Notify>,
    /// The TwiML's URLs, built once from `PUBLIC_URL`.
    public_urls: Option<PublicUrls>,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn CallStore>) -> Arc<Self> {
        let metrics = Arc::new(Metrics::with_tenant_series(config.tenant_metrics));
        metrics
            .max_concurrent
            .set(i64::try_from(config.max_concurrent_calls).unwrap_or(i64::MAX));
        let calls = Arc::new(Calls::new(calls_config(&config), store, metrics.clone()));
        // Start-up checked that WHATSAPP_FROM comes with an account, credentials and a usable
        // TWILIO_API_BASE; a client that still cannot be built leaves the hand-off off, loudly.
        let whatsapp = config.waiting_room.whatsapp.clone().and_then(|whatsapp| {
            match config.twilio_api.client()? {
                Ok(client) => Some(Arc::new(WhatsApp::new(
                    whatsapp,
                    &client,
                    calls.clone(),
                    metrics.clone(),
                ))),
                Err(err) => {
                    tracing::error!(error = %err, "WhatsApp hand-off off: Twilio's REST client could not be built");
                    None
                }
            }
        });
        let twilio_client = config
            .twilio_api
            .client()
            .map(|built| built.map_err(|err| err.to_string()));
        // An unusable PUBLIC_URL leaves each request to build its URLs from its own headers.
        let public_urls = config
            .public_url
            .as_deref()
            .and_then(|base| PublicUrls::new(base).ok());
        Arc::new(Self {
            public_urls,
            config,
            calls,
            metrics,
            lifecycle: Arc::default(),
            whatsapp,
            twilio_client,
            dialer_wake: Arc::default(),
        })
    }

    /// Twilio's REST client, if credentials are set and make one.
    pub fn twilio_client(&self) -> Option<&twilio_api::TwilioClient> {
        self.twilio_client.as_ref().and_then(|c| c.as_ref().ok())
    }

    /// Twilio's REST client as it was built (the error says why not).
    pub fn twilio_client_result(&self) -> Option<Result<twilio_api::TwilioClient, String>> {
        self.twilio_client.clone()
    }

    /// The TwiML's URLs from `PUBLIC_URL`; `None` without a usable one.
    pub fn public_urls(&self) -> Option<&PublicUrls> {
        self.public_urls.as_ref()
    }

    /// Wakes this replica's outbound dialer (docs/reference.md#outbound).
    pub fn dialer_wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.dialer_wake
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The call lifecycle.
    pub fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Draining, the stream tracker and the drain deadline.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// The WhatsApp hand-off, where `WHATSAPP_FROM` is set.
    pub(crate) fn whatsapp(&self) -> Option<&Arc<WhatsApp>> {
        self.whatsapp.as_ref()
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
        tenant_key: config.tenant_key,
        default_tenant_limit: config.default_tenant_limit,
        stream_tokens: config.auth_token().is_some(),
        resume_limit: config.resume_limit,
        wait: config.waiting_room.settings,
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
        // Fixed, not variables (docs/reference.md#admission-deadline).
        admission_deadline: calls_core::store::ADMISSION_DEADLINE,
        admission_queue: calls_core::store::ADMISSION_QUEUE_BOUND,
        reservation: config.reservation,
    };
    Ok(match &config.redis {
        Some(redis) => Arc::new(RedisStore::connect_lazy(redis, store_config)?),
        None => Arc::new(MemoryStore::new(store_config)),
    })
}
