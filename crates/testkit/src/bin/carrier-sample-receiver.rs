//! A sample receiving system for `make up`: accepts every POST with `200 {"Meta":{"Errors":[]}}`
//! and prints one line per request (arrival time, path, log ID, attempt, body size).
#![forbid(unsafe_code)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::Router;

async fn receive(
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], &'static str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    println!(
        "received {} log={} attempt={} received_at={} bytes={}",
        uri.path(),
        header("carrier-log-id"),
        header("carrier-attempt"),
        header("carrier-received-at"),
        body.len()
    );
    (
        [("content-type", "application/json")],
        r#"{"Meta":{"Errors":[]}}"#,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::print_version_if_asked("carrier-sample-receiver");
    let addr = std::env::var("RECEIVER_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".into());
    let app = Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("sample receiver listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
