//! Runs a replica: binds, serves, ticks, and on SIGTERM/SIGINT drains (SPEC §7): refuse new calls,
//! let live ones finish up to `DRAIN_TIMEOUT_SECS`, end the rest, release everything, return.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::app::App;
use crate::{http, renewal};

/// A request whose headers have not all arrived by then is dropped (SPEC §5, slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves on `listener` until `shutdown` is cancelled, then drains and returns.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let stop_ticks = CancellationToken::new();
    let ticks = tokio::spawn(renewal::run(app.clone(), stop_ticks.clone()));

    let drained = CancellationToken::new();
    let drain_task = {
        let app = app.clone();
        let drained = drained.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            drain(&app).await;
            drained.cancel();
        })
    };

    // HTTP keeps serving while draining: webhooks get the reject mode, /readyz says 503, status
    // callbacks still release slots. It stops once the live calls are gone.
    serve_http(listener, http::router(app.clone()), drained).await;

    drain_task.abort();
    stop_ticks.cancel();
    let _ = ticks.await;
    Ok(())
}

/// The accept loop: HTTP/1.1 with upgrades (WebSockets), TCP_NODELAY for 20 ms frames, and a
/// header-read timeout so a client trickling headers (slowloris) is dropped.
async fn serve_http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    // In-flight requests get a moment to finish; upgraded sockets are tracked separately.
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
}

async fn drain(app: &App) {
    app.start_draining();
    let live = app.calls.live().len();
    info!(live, timeout = ?app.config.drain_timeout, "draining: new calls refused, live calls may finish");
    if tokio::time::timeout(app.config.drain_timeout, app.calls.live().wait_empty())
        .await
        .is_err()
    {
        warn!(
            remaining = app.calls.live().len(),
            "drain timeout passed; ending the remaining calls as drain_timeout"
        );
        app.lifecycle.stop_streams.cancel();
    }
    app.lifecycle.streams.close();
    app.lifecycle.streams.wait().await;
    info!("drained: every slot released");
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
