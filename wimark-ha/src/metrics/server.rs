//! The HTTP listener of `/metrics`, bounded: a connection cap, a deadline
//! for a request's headers and a lifetime per connection, so that no client
//! (any local user can connect) takes the daemon's file descriptors or
//! memory; the control socket and the fast path never share its limits.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::Metrics;
use crate::storm::{more, Storm};

/// Connections served at once: a scraper needs one; one over the cap is
/// closed at once (and counted), so it holds no descriptor.
pub const MAX_CONNECTIONS: usize = 16;
/// A request's headers must be in within this (a half-open request is
/// closed then).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection lives at most this long, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// At most one log line per this, per kind of trouble.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "metrics endpoint listening");
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accept_failing = Storm::new(LOG_PERIOD);
    let mut over_cap = Storm::new(LOG_PERIOD);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: do not spin, try again shortly.
                if let Some(unlogged) = accept_failing.occurred(Instant::now()) {
                    tracing::warn!("metrics endpoint: accept: {e}{}", more(unlogged));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            metrics.connection_refused();
            if let Some(unlogged) = over_cap.occurred(Instant::now()) {
                tracing::warn!(
                    "metrics endpoint: {MAX_CONNECTIONS} connections open, {peer} closed at once{}",
                    more(unlogged)
                );
            }
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, metrics).await;
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response, StatusCode};

    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        async move {
            if request.uri().path() == "/metrics" {
                Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(metrics.encode())))
            } else {
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(b"see /metrics\n")))
            }
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics endpoint connection: {e}"),
        Err(_) => tracing::debug!("metrics endpoint connection: closed at its lifetime"),
    }
}
