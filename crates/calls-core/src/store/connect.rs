//! The connection to Redis as `REDIS_URL` and the `REDIS_TLS_*` files describe it ([`RedisSettings`]): direct
//! (plain, or TLS with a private CA and a client certificate) or through Sentinel, following failovers.
//!
//! A direct URL gets a [`ConnectionManager`], which reconnects to the same address on its own after
//! a connection error. A Sentinel URL gets a manager for the primary Sentinel names; a manager would
//! reconnect to the dead primary forever, so a connection error, a timeout or a reply that says the
//! node no longer takes writes (`READONLY`: a demoted primary; `NOREPLICAS`; `MASTERDOWN`) makes
//! this module ask Sentinel again, in the background, and switch once Sentinel names another one.
//!
//! Either way a timeout or such a reply also replaces the link with a fresh one (relink): a socket
//! whose packets vanish (a partition) would otherwise wait out TCP's retransmission backoff after
//! the network heals, and a plain `redis://` name that moved to the new primary would never be
//! resolved again. Every switch or relink counts a new [`StoreConnection::generation`], so the
//! store loads its scripts and reads `run_id` again: a failover is noticed like a restart
//! (docs/reference.md#admission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, TlsMode, Value,
};
use tracing::{info, warn};

use super::settings::{ConnectError, RedisSettings, RedisTarget, RedisTls, SentinelTarget};

/// After one Sentinel lookup or relink, the next waits at least this long: a failing primary fails
/// every command, and one lookup per burst of failures is enough.
const LOOKUP_SPACING: Duration = Duration::from_millis(100);

/// The same diagnosis is logged at most this often: a bad certificate fails every command.
const DIAGNOSIS_SPACING: Duration = Duration::from_secs(10);

/// Builds the connection; nothing is dialled until the first command.
///
/// # Errors
///
/// A URL the client cannot use, or a `REDIS_TLS_*` file that cannot be read or used.
pub(crate) fn connect_lazy(
    settings: &RedisSettings,
    op_timeout: Duration,
) -> Result<StoreConnection, ConnectError> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let route = match &settings.target {
        RedisTarget::Sentinel(sentinel) => Route::Sentinel(Arc::new(SentinelRoute::new(
            sentinel,
            &settings.tls,
            manager_config,
            op_timeout,
        )?)),
        RedisTarget::Tcp { .. } | RedisTarget::Unix { .. } => {
            let client = direct_client(settings.url(), &settings.tls)?;
            Route::Direct(Arc::new(DirectRoute::new(
                client,
                manager_config,
                op_timeout,
            )?))
        }
    };
    Ok(StoreConnection {
        route,
        diagnosis: Arc::new(Diagnosis::default()),
    })
}

fn direct_client(url: &str, tls: &RedisTls) -> Result<Client, ConnectError> {
    let info = url.into_connection_info().map_err(ConnectError::Client)?;
    if tls.is_empty() {
        return Client::open(info).map_err(ConnectError::Client);
    }
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(ConnectError::TlsFilesWithoutTls);
    }
    Client::build_with_tls(info, tls.certificates()?).map_err(ConnectError::Client)
}

/// The connection the store uses: cheap to clone, shared by every clone.
#[derive(Clone)]
pub(super) struct StoreConnection {
    route: Route,
    diagnosis: Arc<Diagnosis>,
}

#[derive(Clone)]
enum Route {
    Direct(Arc<DirectRoute>),
    Sentinel(Arc<SentinelRoute>),
}

impl StoreConnection {
    /// Counts the links this connection has used: a new value means commands now go to a fresh
    /// link (another primary, or the same name resolved again), where the scripts are not loaded
    /// and Redis may be another server.
    pub(super) fn generation(&self) -> u64 {
        match &self.route {
            Route::Direct(route) => route.generation.load(Ordering::Acquire),
            Route::Sentinel(route) => route.generation.load(Ordering::Acquire),
        }
    }

    /// The connection this command goes to, and what to do if it fails.
    async fn begin(&self) -> RedisResult<(ConnectionManager, Attempt)> {
        match &self.route {
            Route::Direct(route) => Ok((route.current(), Attempt::new(&self.route))),
            Route::Sentinel(route) => {
                let conn = match route.primary().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        self.diagnosis.saw(&err);
                        return Err(err);
                    }
                };
                Ok((conn, Attempt::new(&self.route)))
            }
        }
    }

    fn end<T>(&self, attempt: Attempt, result: &RedisResult<T>) {
        if let Err(err) = result {
            self.diagnosis.saw(err);
        }
        attempt.finish(result);
    }
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, attempt) = self.begin().await?;
            let result = conn.req_packed_command(cmd).await;
            // A server's error reply (`READONLY`, …) comes back as a value, turned into an
            // error only when the caller reads it: look at it here, where the link is known.
            let outcome = match &result {
                Ok(Value::ServerError(err)) => Err(RedisError::from(err.clone())),
                Ok(_) => Ok(()),
                Err(err) => Err(err.clone()),
            };
            self.end(attempt, &outcome);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut conn, attempt) = self.begin().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            let first_error = match &result {
                Ok(values) => values.iter().find_map(|value| match value {
                    Value::ServerError(err) => Some(RedisError::from(err.clone())),
                    _ => None,
                }),
                Err(err) => Some(err.clone()),
            };
            self.end(attempt, &first_error.map_or(Ok(()), Err));
            result
        })
    }

    fn get_db(&self) -> i64 {
        match &self.route {
            Route::Direct(route) => route.current().get_db(),
            Route::Sentinel(route) => route.db,
        }
    }
}

/// One command. If it fails as a lost primary or a dead link fails, or is dropped unfinished after
/// about a timeout (the store gave up on a server that does not answer), the route relinks:
/// Sentinel is asked again, a direct name is resolved again on a fresh link.
struct Attempt {
    route: Option<Route>,
    began: Instant,
}

impl Attempt {
    fn new(route: &Route) -> Self {
        Self {
            route: Some(route.clone()),
            began: Instant::now(),
        }
    }

    fn finish<T>(mut self, result: &RedisResult<T>) {
        let Some(route) = self.route.take() else {
            return;
        };
        let Err(err) = result else { return };
        match route {
            Route::Sentinel(route) if primary_may_have_moved(err) => {
                route.look_up_in_background(link_is_suspect(err));
            }
            // A connection error is the manager's own to repair (it reconnects, resolving the
            // name again); a timeout or a demoted node is not.
            Route::Direct(route) if link_is_suspect(err) => route.relink(err),
            _ => {}
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some(route) = self.route.take() else {
            return;
        };
        // Dropped sooner, the command was abandoned by its caller, not by a silent server.
        let timeout = match &route {
            Route::Sentinel(route) => route.lookup_timeout,
            Route::Direct(route) => route.op_timeout,
        };
        if self.began.elapsed() < timeout * 9 / 10 {
            return;
        }
        match route {
            Route::Sentinel(route) => route.look_up_in_background(true),
            Route::Direct(route) => route.relink_after_timeout(),
        }
    }
}

fn primary_may_have_moved(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || link_is_suspect(err)
}

/// Whether `err` says this link leads nowhere useful any more, though the connection stands: no
/// answer in time (packets vanish: a partition), or the node no longer takes writes (demoted by a
/// failover, or cut off from its replicas with `min-replicas-to-write`).
pub(crate) fn link_is_suspect(err: &RedisError) -> bool {
    err.is_timeout() || refuses_writes(err)
}

/// `READONLY` (a replica now), `MASTERDOWN`, `NOREPLICAS` (`min-replicas-to-write` unmet): the
/// node answers but will not take this write.
pub fn refuses_writes(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    ) || err.code() == Some("NOREPLICAS")
}

/// A direct URL's link: a manager for the URL's address, replaced by a fresh one (the name
/// resolved again, a new socket) when a command times out or the node refuses writes.
struct DirectRoute {
    client: Client,
    manager_config: ConnectionManagerConfig,
    op_timeout: Duration,
    conn: Mutex<ConnectionManager>,
    generation: AtomicU64,
    /// When the link was last replaced: one relink per burst of failures.
    relinked_at: Mutex<Option<Instant>>,
}

impl DirectRoute {
    fn new(
        client: Client,
        manager_config: ConnectionManagerConfig,
        op_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            .map_err(ConnectError::Client)?;
        Ok(Self {
            client,
            manager_config,
            op_timeout,
            conn: Mutex::new(conn),
            generation: AtomicU64::new(0),
            relinked_at: Mutex::new(None),
        })
    }

    fn current(&self) -> ConnectionManager {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn relink(&self, err: &RedisError) {
        if self.replace() {
            warn!(error = %err, "Redis link replaced: the next command resolves the address again on a fresh connection");
        }
    }

    fn relink_after_timeout(&self) {
        if self.replace() {
            warn!("Redis did not answer in time: the link is replaced by a fresh connection");
        }
    }

    /// Replaces the manager with a new lazy one, unless one was made moments ago. Commands in
    /// flight finish (or time out) on the old one, which closes when the last of them lets go.
    fn replace(&self) -> bool {
        {
            let mut at = self
                .relinked_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if at.is_some_and(|at| at.elapsed() < LOOKUP_SPACING) {
                return false;
            }
            *at = Some(Instant::now());
        }
        let Ok(fresh) = ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.manager_config.clone(),
        ) else {
            return false;
        };
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The primary Sentinel names for one master, and the Sentinel client that names it.
struct SentinelRoute {
    master_name: String,
    db: i64,
    sentinel: tokio::sync::Mutex<SentinelClient>,
    primary: Mutex<Option<Primary>>,
    manager_config: ConnectionManagerConfig,
    lookup_timeout: Duration,
    looking: AtomicBool,
    /// Counts switches and relinks (see [`StoreConnection::generation`]).
    generation: AtomicU64,
}

#[derive(Clone)]
struct Primary {
    /// `host:port` as Sentinel gave it (no credentials).
    addr: String,
    conn: ConnectionManager,
}

impl SentinelRoute {
    fn new(
        url: &SentinelTarget,
        tls: &RedisTls,
        manager_config: ConnectionManagerConfig,
        op_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let nodes = url.sentinels.iter().map(|node| {
            let host = node.bare_host().to_owned();
            if url.tls {
                ConnectionAddr::TcpTls {
                    host,
                    port: node.port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, node.port)
            }
        });
        let mut builder =
            SentinelClientBuilder::new(nodes, &url.master, SentinelServerType::Master)
                .map_err(ConnectError::Client)?
                .set_client_to_redis_db(url.db);
        if let Some(username) = url.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = url.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if url.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if !tls.is_empty() {
                let certificates = tls.certificates()?;
                builder = builder
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_certificates(certificates);
            }
        } else if !tls.is_empty() {
            return Err(ConnectError::TlsFilesWithoutTls);
        }
        Ok(Self {
            master_name: url.master.clone(),
            db: url.db,
            sentinel: tokio::sync::Mutex::new(builder.build().map_err(ConnectError::Client)?),
            primary: Mutex::new(None),
            manager_config,
            lookup_timeout: op_timeout,
            looking: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The primary's connection; the first command waits for Sentinel to name it.
    async fn primary(&self) -> RedisResult<ConnectionManager> {
        if let Some(primary) = self.current() {
            return Ok(primary.conn);
        }
        let mut sentinel = self.sentinel.lock().await;
        // Commands that queued behind the first lookup use what it found.
        if let Some(primary) = self.current() {
            return Ok(primary.conn);
        }
        self.look_up_with(&mut sentinel, false).await?;
        self.current().map(|p| p.conn).ok_or_else(|| {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "Sentinel named no primary",
            ))
        })
    }

    /// Asks Sentinel which node is the primary now and switches to it if it moved; with `fresh`,
    /// relinks to it even where it did not (the old link timed out or met a demoted node).
    async fn look_up(&self, fresh: bool) -> RedisResult<()> {
        let mut sentinel = self.sentinel.lock().await;
        self.look_up_with(&mut sentinel, fresh).await
    }

    async fn look_up_with(&self, sentinel: &mut SentinelClient, fresh: bool) -> RedisResult<()> {
        let client = tokio::time::timeout(self.lookup_timeout, sentinel.async_get_client())
            .await
            .map_err(|_| {
                RedisError::from((
                    ErrorKind::Io,
                    "no Sentinel named a primary in time",
                    format!("{:?}", self.lookup_timeout),
                ))
            })??;
        let addr = client.get_connection_info().addr().to_string();
        let previous = self.current().map(|p| p.addr);
        let moved = previous.as_deref() != Some(addr.as_str());
        if !moved && !fresh {
            return Ok(());
        }
        let conn = ConnectionManager::new_lazy_with_config(client, self.manager_config.clone())?;
        *self.primary.lock().unwrap_or_else(PoisonError::into_inner) = Some(Primary {
            addr: addr.clone(),
            conn,
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
        match previous {
            None => {
                info!(master = %self.master_name, primary = %addr, "Sentinel named the Redis primary");
            }
            Some(_) if !moved => {
                info!(master = %self.master_name, primary = %addr, "Sentinel names the same primary; on a fresh connection");
            }
            Some(previous) => warn!(
                master = %self.master_name,
                primary = %addr,
                %previous,
                "Redis failed over: Sentinel names a new primary; following it"
            ),
        }
        Ok(())
    }

    /// One lookup at a time, spaced, off the command's path: the failed command has already
    /// returned its error; the next one goes to whichever primary Sentinel named meanwhile.
    fn look_up_in_background(self: &Arc<Self>, fresh: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let route = self.clone();
        runtime.spawn(async move {
            if let Err(err) = route.look_up(fresh).await {
                warn!(master = %route.master_name, error = %err, "Sentinel could not name a reachable primary; retrying on the next failure");
            }
            tokio::time::sleep(LOOKUP_SPACING).await;
            route.looking.store(false, Ordering::Release);
        });
    }
}

/// Turns a TLS failure into one log line an operator can act on, at most every ten seconds: the
/// client library's text ("invalid peer certificate: UnknownIssuer") names no setting to change.
#[derive(Default)]
struct Diagnosis {
    /// Milliseconds since `epoch` of the last line; 0: none yet.
    last_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Diagnosis {
    fn saw(&self, err: &RedisError) {
        let Some(reason) = tls_failure(err) else {
            return;
        };
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let spacing = u64::try_from(DIAGNOSIS_SPACING.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < spacing {
            return;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            warn!("Redis TLS handshake failed: {reason}");
        }
    }
}

/// What a TLS failure means for the operator, from the error and its sources.
fn tls_failure(err: &RedisError) -> Option<&'static str> {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    const READINGS: &[(&str, &str)] = &[
        (
            "UnknownIssuer",
            "the server's certificate is not trusted (unknown issuer): set REDIS_TLS_CA_FILE to the CA that signed it",
        ),
        (
            "certificate not valid for name",
            "the server's certificate does not name the host in REDIS_URL",
        ),
        (
            "NotValidForName",
            "the server's certificate does not name the host in REDIS_URL",
        ),
        (
            "certificate expired",
            "the server's certificate has expired",
        ),
        (
            "invalid peer certificate: Expired",
            "the server's certificate has expired",
        ),
        (
            "alert: CertificateRequired",
            "the server requires a client certificate: set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE",
        ),
        (
            "alert: UnknownCA",
            "the server does not trust the client certificate (REDIS_TLS_CERT_FILE)",
        ),
        (
            "alert: BadCertificate",
            "the server refused the client certificate (REDIS_TLS_CERT_FILE)",
        ),
        (
            "alert: HandshakeFailure",
            "the server refused the TLS handshake (does it require a client certificate?)",
        ),
        (
            "invalid peer certificate",
            "the server's certificate was refused",
        ),
    ];
    READINGS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, reading)| *reading)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::settings::ClientCert;

    fn settings(url: &str, tls: RedisTls) -> RedisSettings {
        RedisSettings::new(url, tls).unwrap()
    }

    #[test]
    fn tls_files_are_read_and_checked_when_the_connection_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RedisTls {
            ca_file: Some(dir.path().join("missing.pem")),
            client_cert: None,
        };
        for url in ["rediss://h:6380/0", "rediss+sentinel://s1/m"] {
            let err = connect_lazy(&settings(url, missing.clone()), Duration::from_secs(1))
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.starts_with("REDIS_TLS_CA_FILE: cannot read"),
                "{url}: {err}"
            );
        }
        let client = RedisTls {
            ca_file: None,
            client_cert: Some(ClientCert {
                cert_file: dir.path().join("client.pem"),
                key_file: dir.path().join("client.key"),
            }),
        };
        let err = connect_lazy(
            &settings("rediss://h:6380/0", client),
            Duration::from_secs(1),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.starts_with("REDIS_TLS_CERT_FILE: cannot read"), "{err}");
    }

    #[test]
    fn tls_failures_are_read_for_the_operator() {
        let unknown = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(tls_failure(&unknown).unwrap().contains("REDIS_TLS_CA_FILE"));
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(tls_failure(&refused), None);
    }
}
