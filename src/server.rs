//! Runs a replica: binds, serves, ticks, and on SIGTERM/SIGINT drains (docs/reference.md#drain):
//! refuse new calls, let live ones finish up to the one `DRAIN_TIMEOUT_SECS` deadline, end the
//! rest, release, return.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::app::App;
use crate::lifecycle::STREAMS_END_GRACE;
use crate::{http, outbound, renewal};

mod accept;
mod connections;
mod workers;

use accept::Acceptor;
pub use connections::OVERFLOW_CONNECTIONS;
use connections::{ConnectionLimit, Counted, OVERFLOW_HEADER_TIMEOUT, Place};
use workers::Workers;

/// A request whose headers have not all arrived by then is dropped (docs/reference.md#media-stream,
/// slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Once the server stops accepting, how long requests in flight get to finish.
const REQUESTS_GRACE: Duration = Duration::from_secs(5);

/// Serves on `listener` until `shutdown` is cancelled, then drains and returns: never later than
/// `DRAIN_TIMEOUT_SECS` after `shutdown` plus a few seconds of grace.
///
/// # Errors
///
/// The listening socket could not be taken over, or the I/O threads could not be started.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = Acceptor::new(listener)?;
    let workers = Workers::start()?;
    let stop_ticks = CancellationToken::new();
    let ticks = tokio::spawn(renewal::run(
        app.calls().clone(),
        app.lifecycle().clone(),
        app.config().renew_interval,
        stop_ticks.clone(),
    ));

    // Outbound calls (docs/reference.md#outbound): the dialer stops placing when the drain begins.
    let stop_dialer = CancellationToken::new();
    let dialer = tokio::spawn(outbound::dialer::run(app.clone(), stop_dialer.clone()));

    // HTTP keeps serving while draining (webhooks get the reject mode, /readyz says 503, status
    // callbacks still release slots) until the drain stops it: at the deadline at the latest.
    let stop_http = CancellationToken::new();
    let drain_task = {
        let app = app.clone();
        let stop_http = stop_http.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stop_dialer.cancel();
            drain(&app, &stop_http).await;
        })
    };
    serve_http(listener, &app, &workers, stop_http).await;
    let drained = drain_task.await;

    // The ticks renew live calls' leases through the whole drain; they stop with the last stream.
    stop_ticks.cancel();
    let _ = ticks.await;
    let _ = dialer.await;
    workers.stop().await;
    if let Err(err) = drained
        && err.is_panic()
    {
        std::panic::resume_unwind(err.into_panic());
    }
    Ok(())
}

/// The accept loop: HTTP/1.1 with upgrades (WebSockets), TCP_NODELAY for 20 ms frames, a
/// header-read timeout so a client trickling headers (slowloris) is dropped, and at most
/// `MAX_CONNECTIONS` connections served (past it, a few more answered 503, then the backlog). Each
/// accepted socket is served for its whole life on one I/O thread (`workers`).
async fn serve_http(
    listener: Acceptor,
    app: &Arc<App>,
    workers: &Workers,
    stop: CancellationToken,
) {
    let router = http::router(app.clone());
    let overflow_router = http::overflow_router(app.clone());
    let limit = ConnectionLimit::new(app.config().max_connections);
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Over the limit: one quick request per connection, then close.
    let mut overflow_builder = builder.clone();
    overflow_builder
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_HEADER_TIMEOUT);
    let mut failures = accept::Failures::default();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = limit.place() => permit,
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    failures.accepted();
                    stream
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    failures.failed(&err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = limit.settle(permit);
        let (builder, router) = match permit.place() {
            Place::Served => (builder.clone(), &router),
            Place::Overflow => (overflow_builder.clone(), &overflow_router),
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        let (thread, placed) = workers.place();
        connections.spawn_on(
            async move {
                // Registered on its I/O thread's reactor, so its wake-ups never cross threads.
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(err) => {
                        warn!(error = %err, "accepted socket could not be registered");
                        return;
                    }
                };
                serve_connection(
                    &builder,
                    service,
                    Counted::new(stream, permit, placed),
                    stop,
                )
                .await;
            },
            thread,
        );
    }
    drop(listener);
    // In-flight requests get a moment to finish; upgraded sockets are tracked separately.
    connections.close();
    if tokio::time::timeout(REQUESTS_GRACE, connections.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = connections.len(),
            "requests still open after the grace; dropping them"
        );
    }
}

/// One connection, on its I/O thread: served until it closes or upgrades, or, once `stop` is
/// cancelled, until its request in flight is answered.
async fn serve_connection(
    builder: &hyper::server::conn::http1::Builder,
    service: TowerToHyperService<axum::Router>,
    stream: Counted<tokio::net::TcpStream>,
    stop: CancellationToken,
) {
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// The drain (docs/reference.md#drain), under one deadline `DRAIN_TIMEOUT_SECS` from the signal:
/// live calls may finish until then (when none is left the drain is over at once); then every
/// stream still open, however late it arrived, is closed as `drain_timeout` and given a short grace
/// to release.
async fn drain(app: &App, stop_http: &CancellationToken) {
    let deadline = Instant::now() + app.config().drain_timeout;
    app.start_draining();
    let lifecycle = app.lifecycle();
    info!(
        live = app.calls().live().len(),
        timeout = ?app.config().drain_timeout,
        "draining: new calls refused, live calls may finish"
    );
    let mut gone = lifecycle.streams_gone_by(deadline).await;
    // No more connections. A stream upgraded meanwhile is still held to the same deadline.
    stop_http.cancel();
    if gone {
        gone = lifecycle.streams_gone_by(deadline).await;
    }
    if !gone {
        warn!(
            remaining = lifecycle.open_streams(),
            "drain timeout passed; ending the remaining calls as drain_timeout"
        );
    }
    // Always: a socket that got in after the last stream ended is closed before its `start`.
    if lifecycle.end_streams().await {
        info!("drained: every slot released");
    } else {
        warn!(
            remaining = lifecycle.open_streams(),
            grace = ?STREAMS_END_GRACE,
            "streams still closing after the grace; returning without them (their leases lapse)"
        );
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received"),
        _ = term => info!("SIGTERM received"),
    }
}
