//! Issue 11 §4: slow clients must not pile up, and overload is shed with 503 + `Retry-After`.
//! Each test runs an ingress replica with small caps and short deadlines (`[limits]`) and talks
//! to it over plain TCP, as a slow or stuck client would.

use std::time::Duration;

use carrier_testkit::client::{message, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request whose head (and `first_bytes` of a body of `declared` bytes) was sent, and whose
/// client then goes quiet, holding the connection open.
async fn stalled_request(base_url: &str, token: &str, declared: usize, first_bytes: &[u8]) -> TcpStream {
    let authority = base_url.strip_prefix("http://").expect("http URL");
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    let head = format!(
        "POST /endpoint HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(first_bytes).await.expect("write body");
    // Let ingress admit it before anything else is sent: a request arriving first would take
    // the slot and this one would be the one shed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stream
}

/// What the server wrote on `stream` until it closed it or sent a whole answer: (status line,
/// head and body as text). Empty when it closed without answering.
async fn answer_on(stream: &mut TcpStream, within: Duration) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .to_lowercase()
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|value| value.parse::<usize>().ok());
                if length.is_some_and(|length| body.len() >= length) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(within, reading)
        .await
        .expect("the server answers or closes in time");
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_does_not_finish_its_headers_or_its_body_in_time_is_cut_off() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let Sender { token, .. } = stack
        .api
        .sender("Slow Link Hospital", "production", &receiver.url("a"), "Results")
        .await;
    let url = stack
        .start_extra_ingress_with(|config| {
            config.limits.header_read_timeout_ms = 500;
            config.limits.body_read_timeout_ms = 1_000;
        })
        .await;

    // Headers that never end: the connection is closed (hyper may first answer 408).
    let authority = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(authority).await.unwrap();
    stream
        .write_all(format!("POST /endpoint HTTP/1.1\r\nHost: {authority}\r\n").as_bytes())
        .await
        .unwrap();
    let answer = answer_on(&mut stream, Duration::from_secs(20)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "an unfinished head is cut off: {answer:?}"
    );

    // A body that trickles in: 408, in the Data Model API's shape, and nothing was accepted.
    let mut stream = stalled_request(&url, &token, 1_000, b"{\"Meta\":").await;
    let answer = answer_on(&mut stream, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("Request body was not received in time"),
        "{answer}"
    );

    // An idle keep-alive connection is closed by the same header timer.
    let mut stream = TcpStream::connect(authority).await.unwrap();
    let body = serde_json::to_vec(&message("Results", 1)).unwrap();
    let head = format!(
        "POST /endpoint HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let answer = answer_on(&mut stream, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let after = answer_on(&mut stream, Duration::from_secs(20)).await;
    assert!(after.is_empty() || after.starts_with("HTTP/1.1 408"), "{after:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_past_the_caps_are_shed_with_503_and_retry_after_and_service_recovers() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let Sender { token: first, .. } = api
        .sender("Busy Hospital", "production", &receiver.url("a"), "Results")
        .await;
    let Sender { token: second, .. } = api
        .sender("Quiet Clinic", "production", &receiver.url("b"), "Results")
        .await;
    let Sender { token: third, .. } = api
        .sender("Third Clinic", "production", &receiver.url("c"), "Results")
        .await;
    let url = stack
        .start_extra_ingress_with(|config| {
            config.limits.max_in_flight = 2;
            config.limits.max_in_flight_per_source = 1;
        })
        .await;
    let api = stack.api.at(&url);

    // The busy source's one slot is held by a request whose body has not arrived yet.
    let mut busy = stalled_request(&url, &first, 1_000, b"{").await;
    let (status, headers, body) = eventually_status(&api, &first, 503).await;
    assert_eq!(headers, "1", "Retry-After on a shed request");
    assert!(
        body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .unwrap()
            .starts_with("Too many requests of this source in progress (at most 1 at once)"),
        "{body}"
    );
    assert_eq!(status, 503);
    // Another source is not held back by it.
    let (status, answer) = api.send(&second, &message("Results", 1)).await;
    assert_eq!(status, 200, "{answer}");

    // Both slots of the replica held: everyone is shed, FHIR in its own shape.
    let mut quiet = stalled_request(&url, &second, 1_000, b"{").await;
    let (_, retry_after, body) = eventually_status(&api, &third, 503).await;
    assert_eq!(retry_after, "1");
    assert!(
        body["Meta"]["Errors"][0]["Text"]
            .as_str()
            .unwrap()
            .starts_with("Carrier is overloaded (2 requests in progress)"),
        "{body}"
    );
    let fhir = api
        .fhir(
            &third,
            "Patient",
            &serde_json::json!({"resourceType": "Patient"}),
            &[],
        )
        .await;
    assert_eq!(fhir.status, 503, "{fhir:?}");
    assert_eq!(fhir.body["resourceType"], "OperationOutcome", "{fhir:?}");

    // The stalled clients go away: their slots come back and the shed sender gets through.
    busy.shutdown().await.unwrap();
    quiet.shutdown().await.unwrap();
    drop((busy, quiet));
    carrier_testkit::eventually(Duration::from_secs(30), "the caps free again", || {
        let api = api.clone();
        let third = third.clone();
        async move {
            let (status, _) = api.send(&third, &message("Results", 2)).await;
            (status == 200).then_some(())
        }
    })
    .await;
    stack.stop().await;
}

/// Sends until a request of `token` gets `status` (the stalled request may take a moment to be
/// admitted); its status, `Retry-After` and body.
async fn eventually_status(
    api: &carrier_testkit::client::Api,
    token: &str,
    status: u16,
) -> (u16, String, serde_json::Value) {
    carrier_testkit::eventually(Duration::from_secs(30), &format!("a {status}"), || {
        let api = api.clone();
        let token = token.to_string();
        async move {
            let (code, headers, body) = api.post_message(&token, &message("Results", 1)).await;
            let retry_after = headers
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_string();
            (code == status).then_some((code, retry_after, body))
        }
    })
    .await
}
