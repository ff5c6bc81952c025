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

/// Issue 14 §6: the adaptive limit on message writes. When writes slow down (here Postgres,
/// where an ingress replica stores every body over `inline_body_bytes`, behind a proxy adding
/// latency), the limit falls and the excess is shed with 503 + `Retry-After` instead of
/// queueing; what was accepted is delivered; once writes are fast again the limit grows back
/// and every message is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_writes_lower_the_adaptive_limit_and_it_recovers_when_they_are_fast_again() {
    use carrier_testkit::fault_proxy::FaultMode;

    const WAVE: usize = 40;
    let mut stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let Sender { token, .. } = stack
        .api
        .sender("Slow Store Hospital", "production", &receiver.url("a"), "Results")
        .await;
    let (proxy, proxied_url) = stack.database_behind_proxy().await;
    let url = stack
        .start_extra_ingress_with(|config| {
            config.database_url = proxied_url;
            config.inline_body_bytes = 16;
            config.limits.admission_target_latency_ms = 50;
        })
        .await;
    let api = stack.api.at(&url);
    let next = std::sync::atomic::AtomicUsize::new(0);
    // A wave of concurrent messages: (status, Retry-After, error text, sequence) of each.
    let wave = || {
        let first = next.fetch_add(WAVE, std::sync::atomic::Ordering::Relaxed);
        let (api, token) = (api.clone(), token.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for sequence in first..first + WAVE {
                let (api, token) = (api.clone(), token.clone());
                tasks.spawn(async move {
                    let (status, headers, body) =
                        api.post_message(&token, &message("Results", sequence)).await;
                    let retry_after = headers
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let text = body["Meta"]["Errors"][0]["Text"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    (status, retry_after, text, sequence)
                });
            }
            tasks.join_all().await
        }
    };
    let mut accepted = Vec::new();
    let mut keep = |answers: &[(u16, String, String, usize)]| {
        accepted.extend(
            answers
                .iter()
                .filter(|answer| answer.0 == 200)
                .map(|answer| answer.3),
        );
    };

    // Fast writes: a wave well under the starting limit (64) is all accepted.
    let answers = wave().await;
    keep(&answers);
    assert!(answers.iter().all(|answer| answer.0 == 200), "{answers:?}");

    // Every statement now waits ~0.6 s: the limit falls until waves are partly shed.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(300)));
    let mut shed = None;
    for _ in 0..40 {
        let answers = wave().await;
        keep(&answers);
        for (status, retry_after, text, _) in &answers {
            assert!(
                [200, 503].contains(status),
                "only accepted or shed: {status} {text}"
            );
            if *status == 503 {
                shed = Some((retry_after.clone(), text.clone()));
            }
        }
        if shed.is_some() {
            break;
        }
    }
    let (retry_after, text) = shed.expect("slow writes shed part of a wave");
    assert_eq!(retry_after, "1");
    assert!(
        text.starts_with("Carrier is overloaded (durable writes are slow: at most ")
            && text.ends_with("messages in progress on this replica now); retry after the Retry-After delay"),
        "{text}"
    );
    let metrics = carrier_testkit::metrics_page(&stack.ingress_admin_url).await;
    assert!(
        metrics.contains("carrier_ingress_requests_shed_total{cap=\"admission\"}"),
        "the shed is counted by its cap"
    );

    // Writes are fast again: the limit grows back and a whole wave is accepted.
    proxy.set_mode(FaultMode::Pass);
    for attempt in 0.. {
        let answers = wave().await;
        keep(&answers);
        if answers.iter().all(|answer| answer.0 == 200) {
            break;
        }
        assert!(attempt < 60, "the limit did not recover: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything accepted was delivered.
    carrier_testkit::eventually(
        Duration::from_secs(120),
        "every accepted message delivered",
        || {
            let arrived: std::collections::HashSet<u64> = receiver
                .received()
                .iter()
                .filter_map(|received| received.arrival().map(|arrival| arrival.sequence))
                .collect();
            let missing = accepted
                .iter()
                .filter(|sequence| !arrived.contains(&(**sequence as u64)))
                .count();
            async move { (missing == 0).then_some(()) }
        },
    )
    .await;
    stack.stop().await;
}
