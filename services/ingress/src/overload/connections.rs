//! The HTTP server loop: accepts connections up to `max_connections` and serves each with
//! hyper, HTTP/1.1 with a header-read timeout, or HTTP/2 (prior knowledge).
//!
//! `axum::serve` would do the same without the two limits (it sets no timer, so hyper's
//! header-read timeout never runs, and it accepts every connection it can). A slow client that
//! sends a header line every few seconds, or opens connections and sends nothing, would hold a
//! task and a socket each for as long as it likes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::LimitSettings;
use crate::metrics::metrics;

/// Serves `app` on `listener` until `shutdown`; then stops accepting, lets every connection
/// finish the request it is serving (idle ones close at once) and returns when all are closed.
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &LimitSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let header_read_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    // Warned once per episode of a full server, not at every connection accepted while full.
    let mut full = false;
    loop {
        match (slots.available_permits() == 0, full) {
            (true, false) => {
                metrics().connections_full.inc();
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "every connection slot is taken; new connections wait to be accepted"
                );
                full = true;
            }
            (false, true) => full = false,
            _ => {}
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait a little instead of spinning on the error.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let open = metrics().connections.clone();
            open.inc();
            serve_connection(stream, peer, app, header_read_timeout, shutdown).await;
            open.dec();
        });
    }
    // Every slot back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _drained = slots.acquire_many(all).await;
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            Ok::<_, Infallible>(
                app.oneshot(request.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|never| match never {}),
            )
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, %peer, "connection ended with an error");
            }
            return;
        }
        _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    if let Err(error) = connection.await {
        tracing::debug!(error = %error, %peer, "connection ended with an error");
    }
}
