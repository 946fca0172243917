//! Podman's own API (libpod), beside the Docker-compatible one bollard
//! speaks, for what the latter does not say: whether a network resolves
//! its containers' names. Against Docker (no libpod API) the answer is
//! unknown.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long the question may take; it only feeds a report.
const PATIENCE: Duration = Duration::from_secs(5);

/// Whether podman has DNS on for network `name` (`dns_enabled`); None when
/// it cannot be asked or does not say.
pub async fn network_dns(socket: &str, name: &str) -> Option<bool> {
    let path = format!("/v4.0.0/libpod/networks/{name}/json");
    let body = tokio::time::timeout(PATIENCE, get(socket, &path))
        .await
        .ok()??;
    let inspected: serde_json::Value = serde_json::from_slice(&body).ok()?;
    inspected.get("dns_enabled")?.as_bool()
}

/// GET `path` over the unix socket; the body of a 200 answer.
async fn get(socket: &str, path: &str) -> Option<Bytes> {
    let stream = tokio::net::UnixStream::connect(socket.trim_start_matches("unix://"))
        .await
        .ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // The connection is driven until the answer is read, then dropped.
    let driven = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "podman")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let answer = async {
        let response = sender.send_request(request).await.ok()?;
        if response.status() != hyper::StatusCode::OK {
            return None;
        }
        Some(response.into_body().collect().await.ok()?.to_bytes())
    }
    .await;
    driven.abort();
    answer
}
