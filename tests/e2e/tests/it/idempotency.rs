//! `Idempotency-Key`: a retried POST gets the original answer and the message is sent once.

use std::time::Duration;

use carrier_testkit::client::{message, Answer, Api};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

async fn post(api: &Api, token: &str, key: &str, body: &Value) -> Answer {
    api.request(
        reqwest::Method::POST,
        "/endpoint",
        Some(token),
        &[("content-type", "application/json"), ("idempotency-key", key)],
        Some(serde_json::to_vec(body).unwrap()),
    )
    .await
}

fn message_id(answer: &Answer) -> String {
    answer.body["Meta"]["Message"]["ID"]
        .as_str()
        .unwrap_or_else(|| panic!("a message ID in {answer:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_post_answers_with_the_original_ids_and_the_message_is_delivered_once() {
    let stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = &stack.api;
    let organization = api.create_organization("General Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let other_source = api.create_source(&organization, "production").await;
    for source in [&source, &other_source] {
        let destination = api
            .create_destination(&organization, &receiver.url("d"), "production")
            .await;
        let destination_id = destination["id"].as_str().unwrap();
        api.subscribe(&source.id, destination_id, "PatientAdmin").await;
        api.subscribe(&source.id, destination_id, "Patient").await;
    }
    let token = api.token(&source).await;

    // Data Model API: the same request three times is one message.
    let first = post(api, &token, "admission-1", &message("PatientAdmin", 1)).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), "");
    for _ in 0..2 {
        let again = post(api, &token, "admission-1", &message("PatientAdmin", 1)).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(
            again.body, first.body,
            "the original answer, same message and log IDs"
        );
        assert_eq!(again.header("idempotent-replayed"), "true");
    }

    // The same key for a different message is refused, never answered with another's IDs.
    let different = post(api, &token, "admission-1", &message("PatientAdmin", 2)).await;
    assert_eq!(different.status, 400, "{different:?}");
    assert_eq!(
        different.error_text(),
        "Idempotency-Key was already used with a different request; use a new key for a new message"
    );
    let bad = post(api, &token, &"k".repeat(256), &message("PatientAdmin", 2)).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.error_text(),
        "Idempotency-Key must be 1 to 255 printable ASCII characters"
    );

    // Keys belong to their source: another source's "admission-1" is its own message.
    let other_token = api.token(&other_source).await;
    let other = post(api, &other_token, "admission-1", &message("PatientAdmin", 1)).await;
    assert_eq!(other.status, 200, "{other:?}");
    assert_ne!(message_id(&other), message_id(&first));

    // Concurrent retries: one message; every 200 carries its IDs, the rest are told to wait.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (api, token) = (api.clone(), token.clone());
        tasks.spawn(async move { post(&api, &token, "admission-3", &message("PatientAdmin", 3)).await });
    }
    let burst = tasks.join_all().await;
    let accepted: Vec<&Answer> = burst.iter().filter(|answer| answer.status == 200).collect();
    assert!(!accepted.is_empty(), "{burst:?}");
    for answer in &burst {
        match answer.status {
            200 => assert_eq!(answer.body, accepted[0].body),
            409 => {
                assert_eq!(answer.header("retry-after"), "1");
                assert_eq!(
                    answer.error_text(),
                    "A request with this Idempotency-Key is still in progress; retry after the Retry-After delay"
                );
            }
            status => panic!("unexpected {status}: {answer:?}"),
        }
    }
    let burst_message = message_id(accepted[0]);

    // FHIR API: the IDs come back in the headers, the same on a replay.
    let patient = json!({ "resourceType": "Patient", "id": "p-1" });
    let headers = [("idempotency-key", "patient-1")];
    let fhir_first = api.fhir(&token, "Patient", &patient, &headers).await;
    let fhir_again = api.fhir(&token, "Patient", &patient, &headers).await;
    assert_eq!(
        (fhir_first.status, fhir_again.status),
        (200, 200),
        "{fhir_again:?}"
    );
    for header in ["carrier-message-id", "carrier-log-ids"] {
        assert!(!fhir_first.header(header).is_empty());
        assert_eq!(fhir_again.header(header), fhir_first.header(header));
    }
    assert_eq!(fhir_again.header("idempotent-replayed"), "true");

    // A last message without a key: once it has arrived, everything before it from this source
    // has (one destination, one order), so the counts below are final.
    let (status, last) = api.send(&token, &message("PatientAdmin", 4)).await;
    assert_eq!(status, 200, "{last}");
    let last_id = last["Meta"]["Message"]["ID"].as_str().unwrap().to_string();
    carrier_testkit::eventually(Duration::from_secs(60), "the last message", || {
        let arrived = receiver
            .received()
            .iter()
            .any(|request| request.header("carrier-message-id") == last_id);
        async move { arrived.then_some(()) }
    })
    .await;
    let from_source: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.header("carrier-message-id").to_string())
        .filter(|id| *id != message_id(&other))
        .collect();
    assert_eq!(
        from_source,
        vec![
            message_id(&first),
            burst_message,
            fhir_first.header("carrier-message-id").to_string(),
            last_id
        ],
        "each keyed message delivered exactly once, in order"
    );
}

/// Issue 10 §9b: a write that failed under an `Idempotency-Key` is taken over by the sender's
/// retry with the same IDs (the failed copy may have landed after all). When the subscriptions
/// changed in between, the takeover used to mint new IDs for everything: a destination could
/// then get the message twice under two `webhook-id`s. It keeps the message ID and each earlier
/// destination's log ID now; a destination subscribed since gets a log of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_after_a_subscription_change_keeps_the_earlier_message_and_log_ids() {
    use carrier_store::sqlx::{self, Connection};
    let mut stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let api = stack.api.clone();
    let organization = api.create_organization("Takeover Hospital").await;
    let source = api.create_source(&organization, "production").await;
    let first = api
        .create_destination(&organization, &receiver.url("a"), "production")
        .await;
    let first_id = first["id"].as_str().unwrap().to_string();
    api.subscribe(&source.id, &first_id, "PatientAdmin").await;
    let token = api.token(&source).await;

    // A replica whose topics do not exist: the IDs are stored with the key, then the durable
    // write is refused (502) and the claim is left for the sender's retry.
    let broken_url = stack
        .start_extra_ingress_with(|config| {
            config.kafka.topic_prefix = format!("{}.", carrier_testkit::unique("missing"));
        })
        .await;
    let body = message("PatientAdmin", 9);
    let failed = post(&api.at(&broken_url), &token, "admission-9", &body).await;
    assert_eq!(failed.status, 502, "{failed:?}");
    let mut database = sqlx::PgConnection::connect(&stack.database_url).await.unwrap();
    let (stored_message, stored_routes): (String, Value) = sqlx::query_as(
        "SELECT message_id, routes FROM idempotency_keys WHERE source_id = $1 AND key = 'admission-9'",
    )
    .bind(&source.id)
    .fetch_one(&mut database)
    .await
    .unwrap();
    let stored_log = stored_routes[0]["log_id"].as_str().unwrap().to_string();

    // A second destination is subscribed; the route cache (1 s) sees it.
    let second = api
        .create_destination(&organization, &receiver.url("b"), "production")
        .await;
    let second_id = second["id"].as_str().unwrap().to_string();
    api.subscribe(&source.id, &second_id, "PatientAdmin").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let retried = post(&api, &token, "admission-9", &body).await;
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(message_id(&retried), stored_message, "the message keeps its ID");
    let log_of = |destination_id: &str| {
        retried.body["Meta"]["Logs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|log| log["DestinationID"] == destination_id)
            .map(|log| log["ID"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("a log for {destination_id} in {retried:?}"))
    };
    assert_eq!(
        log_of(&first_id),
        stored_log,
        "the earlier destination keeps its log ID"
    );
    let new_log = log_of(&second_id);
    assert_ne!(new_log, stored_log, "the new destination gets a log of its own");

    // What the receivers see: the earlier log's ID as `webhook-id` at the first destination.
    carrier_testkit::eventually(Duration::from_secs(60), "both deliveries", || {
        let count = receiver.received().len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    for (path, log_id) in [("/a", &stored_log), ("/b", &new_log)] {
        let requests = receiver.received_on(path);
        assert_eq!(requests.len(), 1, "{path}: once");
        assert_eq!(requests[0].header("webhook-id"), log_id, "{path}");
    }
    stack.stop().await;
}
