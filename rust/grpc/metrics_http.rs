//! `GET /metrics` on a port of its own (`zerohop serve --metrics-port`): the text of
//! [`crate::metrics::encode`], for Prometheus to scrape. The same port answers
//! `GET /healthz` (200 `serving`, 503 `draining`) for balancers that check over plain
//! HTTP/1.1, as HAProxy and most L7 balancers do; gRPC-aware probes use
//! `grpc.health.v1.Health` on the serving port, which says the same.
//!
//! A separate plain HTTP/1.1 listener rather than a route beside the gRPC services:
//! Prometheus scrapes HTTP/1.1, operators expose the two ports differently (metrics
//! inside the cluster only), and a scrape never competes with the gRPC connection cap.
//! A client gets 10 s to send its request headers; a scrape is one request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::metrics;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server takes new calls (false while it drains or stops).
pub type Serving = Arc<dyn Fn() -> bool + Send + Sync>;

/// Answers scrapes and health checks until `stop` is notified.
pub async fn serve(listener: TcpListener, stop: Arc<Notify>, serving: Serving) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.notified() => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of fds, most likely: the gRPC side logs and counts that; wait a little.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let serving = Arc::clone(&serving);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| {
                let serving = Arc::clone(&serving);
                async move { Ok::<_, Infallible>(answer(&request, serving()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: &Request<Incoming>, serving: bool) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            // Reading /proc for every node process: off the async threads.
            match tokio::task::spawn_blocking(metrics::encode).await {
                Ok(text) => reply(StatusCode::OK, metrics::CONTENT_TYPE, text),
                Err(err) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("encoding the metrics failed: {err}\n"),
                ),
            }
        }
        (&Method::GET, "/healthz") if serving => {
            reply(StatusCode::OK, "text/plain", "serving\n".into())
        }
        (&Method::GET, "/healthz") => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        (_, "/metrics" | "/healthz") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "zerohop serves /metrics and /healthz here\n".into(),
        ),
    }
}
