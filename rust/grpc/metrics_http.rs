//! `GET /metrics` on a port of its own (`zerohop serve --metrics-port`): the text of
//! [`crate::metrics::encode`], for Prometheus to scrape.
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

/// Answers scrapes until `stop` is notified.
pub async fn serve(listener: TcpListener, stop: Arc<Notify>) {
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
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request| async move {
                Ok::<_, Infallible>(answer(&request).await)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
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
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "zerohop serves its metrics at /metrics\n".into(),
        ),
    }
}
