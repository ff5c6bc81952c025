//! The per-client rate limit (SPEC §2 429): one sliding window shared by ingress replicas
//! through Redis, and what happens to traffic when Redis dies, hangs and comes back.
//!
//! Timing: the machine is shared and slow at times, so nothing here asserts on speed. Each
//! expectation is derived from when requests were sent and answered (a request is counted at some
//! instant between the two), with seconds of slack between the events that must not overlap.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::redis::RedisServer;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::Value;

use crate::sequences;

/// One request as the sender saw it.
#[derive(Debug, Clone)]
struct Answer {
    sequence: usize,
    status: u16,
    retry_after_secs: Option<u64>,
    body: Value,
    sent: Instant,
    answered: Instant,
}

async fn post(api: &Api, token: &str, sequence: usize) -> Answer {
    let sent = Instant::now();
    let (status, headers, body) = api.post_message(token, &message("Results", sequence)).await;
    let answered = Instant::now();
    let retry_after_secs = headers.get("retry-after").map(|value| {
        value
            .to_str()
            .expect("ascii")
            .parse()
            .expect("Retry-After in seconds")
    });
    Answer {
        sequence,
        status,
        retry_after_secs,
        body,
        sent,
        answered,
    }
}

/// The `Retry-After` a refusal must carry when `blocking` is the counted request whose exit from
/// the window frees the next slot: its exit time minus the refusal's time, in whole seconds
/// rounded up (at least 1), for any instants of counting within [sent, answered] of each.
fn expected_retry_after(blocking: &Answer, refused: &Answer, window: Duration) -> RangeInclusive<u64> {
    let seconds_up = |later: Instant, earlier: Instant| {
        let millis = later.saturating_duration_since(earlier).as_millis() as u64;
        millis.div_ceil(1000).max(1)
    };
    seconds_up(blocking.sent + window, refused.answered)
        ..=seconds_up(blocking.answered + window, refused.sent)
}

fn assert_refused(answer: &Answer, blocking: &Answer, window: Duration, what: &str) {
    assert_eq!(answer.status, 429, "{what}: {answer:?}");
    let retry_after = answer
        .retry_after_secs
        .unwrap_or_else(|| panic!("{what}: a 429 carries Retry-After"));
    let expected = expected_retry_after(blocking, answer, window);
    assert!(
        expected.contains(&retry_after),
        "{what}: Retry-After {retry_after} s, expected {expected:?} (until request {} leaves the window)",
        blocking.sequence
    );
    let text = answer.body["Meta"]["Errors"][0]["Text"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a Data Model API error body: {}", answer.body));
    assert!(text.contains("Rate limit exceeded"), "{what}: {text}");
}

/// Sleeps until `deadline` (returns at once when it has passed).
async fn sleep_until(deadline: Instant) {
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
}

/// Fails with a clear message when the machine was too slow for the scenario's margins, rather
/// than asserting something that no longer follows.
fn assert_still_inside_window(answer: &Answer, counted: &Answer, window: Duration) {
    assert!(
        answer.answered < counted.sent + window,
        "the machine was too slow for this scenario: request {} was answered {:?} after request {} \
         left the window; its outcome says nothing about the limiter",
        answer.sequence,
        answer.answered.saturating_duration_since(counted.sent + window),
        counted.sequence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ingress_replicas_share_one_sliding_window() {
    const LIMIT: u64 = 5;
    const WINDOW_SECS: u64 = 6;
    let window = Duration::from_secs(WINDOW_SECS);
    // Past an instant at which a request has surely left the window.
    let margin = Duration::from_millis(300);
    let defaults = StackOptions::default();
    let mut stack = Stack::start(StackOptions {
        rate_limit: carrier_ingress::RateLimitSettings {
            limit: LIMIT,
            window_secs: WINDOW_SECS,
            ..defaults.rate_limit.clone()
        },
        ..defaults
    })
    .await;
    let second = stack.start_extra_ingress_replica(|_| {}).await;
    let second_url = second.url.clone();
    let receiver = Receiver::start().await;
    // Setting up takes the stack client's address (127.0.0.1) exactly 5 requests: within the
    // limit. The client under test is another loopback address, with a window of its own.
    let api = &stack.api;
    let Sender { token, .. } = api
        .sender("Busy Clinic", "production", &receiver.url("d"), "Results")
        .await;
    let client: IpAddr = "127.0.0.2".parse().unwrap();
    let replicas = [
        stack.api.from_local_address(client),
        Api::new(&second_url, carrier_ingress::DEV_ADMIN_TOKEN).from_local_address(client),
    ];
    // Requests alternate between the two replicas.
    let mut next = {
        let replicas = &replicas;
        let mut sequence = 0;
        move || {
            sequence += 1;
            (sequence, &replicas[sequence % 2])
        }
    };

    // r1 alone, then r2..r5 half a window later: the window is full.
    let (number, replica) = next();
    let r1 = post(replica, &token, number).await;
    assert_eq!(r1.status, 200, "{r1:?}");
    sleep_until(r1.sent + window / 2).await;
    let mut second_batch = Vec::new();
    for _ in 0..4 {
        let (number, replica) = next();
        let answer = post(replica, &token, number).await;
        assert_eq!(
            answer.status, 200,
            "request {number} is within the limit: {answer:?}"
        );
        second_batch.push(answer);
    }
    // Each replica saw only 2 or 3 of them: a per-replica limit would admit the 6th.
    let (number, replica) = next();
    let r6 = post(replica, &token, number).await;
    assert_still_inside_window(&r6, &r1, window);
    assert_refused(&r6, &r1, window, "the 6th request in the window");
    assert!(
        r6.retry_after_secs.unwrap() < WINDOW_SECS,
        "Retry-After counts down to r1's exit, not a whole window"
    );

    // While limited, the probes answer (they are on the operator port, which the limit never
    // sees); refusals were not counted.
    let probe_http = reqwest::Client::builder().local_address(client).build().unwrap();
    for url in [&stack.ingress_admin_url, &second.admin_url] {
        for probe in ["/healthz", "/readyz", "/metrics"] {
            let status = probe_http
                .get(format!("{url}{probe}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status.as_u16(), 200, "{probe} is never limited");
        }
    }

    // r1 has left the window, r2..r5 have not: exactly one request fits. A fixed-bucket limiter
    // fails here or above: a bucket boundary between r1 and r6 would have admitted r6; without
    // one, a boundary has passed by now (a bucket is one window long) and it would admit 5.
    sleep_until(r1.answered + window + margin).await;
    let (number, replica) = next();
    let p1 = post(replica, &token, number).await;
    assert_eq!(
        p1.status, 200,
        "r1's slot is free once r1 left the window: {p1:?}"
    );
    let (number, replica) = next();
    let p2 = post(replica, &token, number).await;
    assert_still_inside_window(&p2, &second_batch[0], window);
    assert_refused(&p2, &second_batch[0], window, "only r1's slot was free");

    // r2..r5 have left too, p1 has not: exactly four fit.
    sleep_until(second_batch[3].answered + window + margin).await;
    let mut third_batch = Vec::new();
    for _ in 0..4 {
        let (number, replica) = next();
        let answer = post(replica, &token, number).await;
        assert_eq!(answer.status, 200, "r2..r5 freed their slots: {answer:?}");
        third_batch.push(answer);
    }
    let (number, replica) = next();
    let q5 = post(replica, &token, number).await;
    assert_still_inside_window(&q5, &p1, window);
    assert_refused(&q5, &p1, window, "p1 still holds the fifth slot");

    // Refusals are visible to the operator.
    let metrics = probe_http
        .get(format!("{}/metrics", second.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let limited: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("carrier_ingress_rate_limited_total "))
        .expect("carrier_ingress_rate_limited_total in /metrics")
        .trim()
        .parse()
        .unwrap();
    assert!(limited >= 3, "three refusals counted, got {limited}");

    // What was accepted is delivered, in order; nothing refused is.
    let mut accepted = vec![r1.sequence];
    accepted.extend(second_batch.iter().map(|answer| answer.sequence));
    accepted.push(p1.sequence);
    accepted.extend(third_batch.iter().map(|answer| answer.sequence));
    let accepted: Vec<u64> = accepted.into_iter().map(|sequence| sequence as u64).collect();
    carrier_testkit::eventually(Duration::from_secs(60), "every accepted message", || {
        let count = receiver.received().len();
        let expected = accepted.len();
        async move { (count >= expected).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sequences(&receiver.received(), None), accepted);
    stack.stop().await;
}

/// The answers to requests sent after `instant`.
fn sent_after(answers: &Mutex<Vec<Answer>>, instant: Instant) -> Vec<Answer> {
    answers
        .lock()
        .unwrap()
        .iter()
        .filter(|answer| answer.sent > instant)
        .cloned()
        .collect()
}

async fn wait_for_a_refusal_after(answers: &Mutex<Vec<Answer>>, instant: Instant, what: &str) {
    carrier_testkit::eventually(Duration::from_secs(90), what, || {
        let refused = sent_after(answers, instant)
            .iter()
            .any(|answer| answer.status == 429);
        async move { refused.then_some(()) }
    })
    .await
}

async fn wait_for_answers_after(answers: &Mutex<Vec<Answer>>, instant: Instant, count: usize, what: &str) {
    carrier_testkit::eventually(Duration::from_secs(90), what, || {
        let enough = sent_after(answers, instant).len() >= count;
        async move { enough.then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_redis_mid_stream_refuses_and_loses_nothing_and_the_limit_returns_with_it() {
    const LIMIT: u64 = 20;
    // Longer than the test: once full, the window stays full until Redis loses it.
    const WINDOW_SECS: u64 = 600;
    // Not running yet: ingress starts without its Redis.
    let mut redis = RedisServer::reserve();
    let defaults = StackOptions::default();
    let stack = Stack::start(StackOptions {
        rate_limit: carrier_ingress::RateLimitSettings {
            redis_url: redis.url(),
            limit: LIMIT,
            window_secs: WINDOW_SECS,
            ..defaults.rate_limit.clone()
        },
        ..defaults
    })
    .await;
    let receiver = Receiver::start().await;
    let api = stack.api.clone();
    // Unlimited while Redis is away.
    let Sender { token, .. } = api
        .sender("Steady Sender", "production", &receiver.url("d"), "Results")
        .await;
    redis.launch().await;

    // One sender, one request at a time: the order of answers is the order of acceptance.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (answers, stop, api, token) = (answers.clone(), stop.clone(), api.clone(), token.clone());
        async move {
            let mut sequence = 0;
            while !stop.load(Ordering::SeqCst) {
                let answer = post(&api, &token, sequence).await;
                answers.lock().unwrap().push(answer);
                sequence += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // Redis appeared after ingress: the limiter connects and counts.
    let started = Instant::now();
    wait_for_a_refusal_after(&answers, started, "the limit, once Redis is up").await;

    // Redis hangs (SIGSTOP): every request sent meanwhile goes through, past the full window.
    redis.pause().await;
    let paused = Instant::now();
    wait_for_answers_after(&answers, paused, 10, "answers while Redis hangs").await;
    let resuming = Instant::now();
    redis.resume().await;
    let while_hung: Vec<Answer> = sent_after(&answers, paused)
        .into_iter()
        .filter(|answer| answer.answered < resuming)
        .collect();
    assert!(while_hung.len() >= 10);
    for answer in &while_hung {
        assert_eq!(answer.status, 200, "fail open while Redis hangs: {answer:?}");
    }
    let resumed = Instant::now();
    wait_for_a_refusal_after(&answers, resumed, "the limit again once Redis answers").await;

    // Redis dies (SIGKILL): every request goes through, twice the limit and more.
    redis.kill().await;
    let killed = Instant::now();
    wait_for_answers_after(
        &answers,
        killed,
        2 * LIMIT as usize,
        "answers while Redis is down",
    )
    .await;
    let restarting = Instant::now();
    // Back empty on the same port: the window starts again and fills again.
    redis.launch().await;
    let while_down: Vec<Answer> = sent_after(&answers, killed)
        .into_iter()
        .filter(|answer| answer.answered < restarting)
        .collect();
    assert!(while_down.len() >= 2 * LIMIT as usize);
    for answer in &while_down {
        assert_eq!(answer.status, 200, "fail open while Redis is down: {answer:?}");
    }
    let restarted = Instant::now();
    wait_for_a_refusal_after(&answers, restarted, "the limit again after Redis restarted").await;

    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let answers = answers.lock().unwrap().clone();
    for answer in &answers {
        assert!(
            answer.status == 200 || answer.status == 429,
            "only acceptances and refusals: {answer:?}"
        );
    }
    let accepted: Vec<u64> = answers
        .iter()
        .filter(|answer| answer.status == 200)
        .map(|answer| answer.sequence as u64)
        .collect();
    let refused = answers.len() - accepted.len();
    assert!(
        refused >= 3,
        "refusals before, after the hang and after the restart"
    );
    carrier_testkit::eventually(Duration::from_secs(120), "every accepted message", || {
        let count = receiver.received().len();
        let expected = accepted.len();
        async move { (count >= expected).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sequences(&receiver.received(), None),
        accepted,
        "every message answered 200 arrives once, in answer order; no refused one arrives"
    );

    let metrics = carrier_testkit::metrics_page(&stack.ingress_admin_url).await;
    let unavailable: u64 = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("carrier_ingress_rate_limit_unavailable_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(
        unavailable >= (while_hung.len() + while_down.len()) as u64,
        "requests let through unlimited are counted: {unavailable}"
    );
    stack.stop().await;
}
