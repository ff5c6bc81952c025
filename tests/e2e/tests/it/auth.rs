//! Sources and their tokens: expiry, disabling a source (on every ingress replica), and how
//! client secrets are stored.

use std::time::{Duration, Instant};

use carrier_testkit::client::{message, Api, Sender, SourceCredentials};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

/// `POST /oauth/token` with these credentials; status and JSON body.
async fn token_request(api: &Api, client_id: &str, client_secret: &str) -> (u16, Value) {
    let answer = api.token_request(client_id, client_secret).await;
    (answer.status, answer.body)
}

fn error_text(body: &Value) -> &str {
    body["Meta"]["Errors"][0]["Text"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_token_is_refused_with_401_and_says_so() {
    let stack = Stack::start(StackOptions {
        token_ttl_secs: 2,
        ..StackOptions::default()
    })
    .await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let organization = api.create_organization("Expiry Clinic").await;
    let source = api.create_source(&organization, "production").await;
    api.subscribed_destination(
        &organization,
        &source,
        &receiver.url("d"),
        "production",
        "PatientAdmin",
    )
    .await;
    let (status, body) = token_request(api, &source.client_id, &source.client_secret).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 2);
    let token = body["access_token"].as_str().unwrap().to_string();
    let (status, _, response) = api.post_message(&token, &message("PatientAdmin", 1)).await;
    assert_eq!(status, 200, "a fresh token works: {response}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, headers, response) = api.post_message(&token, &message("PatientAdmin", 2)).await;
    assert_eq!(status, 401, "{response}");
    assert_eq!(
        error_text(&response),
        "Access token expired; request a new one at /oauth/token"
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, response) = api.log(&token, "0190a0a0-0000-7000-8000-000000000000").await;
    assert_eq!(status, 401, "every route refuses it: {response}");
    stack.stop().await;
}

async fn set_enabled(api: &Api, source: &SourceCredentials, enabled: bool) -> Value {
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{}", source.id),
            Some(&json!({ "enabled": enabled })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], enabled, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_source_is_refused_on_every_replica_and_gets_no_token() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let other_replica = Api::new(
        &stack.start_extra_ingress().await,
        carrier_ingress::DEV_ADMIN_TOKEN,
    );
    let api = stack.api.clone();
    let receiver = Receiver::start().await;
    let Sender { source, token, .. } = api
        .sender(
            "Disabled Clinic",
            "production",
            &receiver.url("d"),
            "PatientAdmin",
        )
        .await;
    let (status, response) = api.send(&token, &message("PatientAdmin", 1)).await;
    assert_eq!(status, 200, "{response}");
    let log_id = response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    let (status, response) = other_replica.send(&token, &message("PatientAdmin", 2)).await;
    assert_eq!(status, 200, "{response}");

    // Client secrets are stored as their SHA-256 only.
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM sources WHERE id = '{}' AND client_secret_hash = sha256(convert_to('{}', 'UTF8'))",
                source.id, source.client_secret
            ))
            .await,
        1
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM sources WHERE strpos(sources::text, '{}') > 0",
                source.client_secret
            ))
            .await,
        0,
        "the secret itself is not stored"
    );

    set_enabled(&api, &source, false).await;
    let disabled_at = Instant::now();
    // The replica that served the PATCH refuses at once ...
    let (status, response) = api.send(&token, &message("PatientAdmin", 3)).await;
    assert_eq!(status, 403, "{response}");
    assert_eq!(error_text(&response), "Source is disabled");
    let (status, response) = api.log(&token, &log_id).await;
    assert_eq!(status, 403, "{response}");
    assert_eq!(error_text(&response), "Source is disabled");
    // ... the other within source_status_refresh_ms (1 s by default).
    carrier_testkit::eventually(Duration::from_secs(10), "the other replica to refuse", || {
        let other_replica = other_replica.clone();
        let token = token.clone();
        async move {
            let (status, response) = other_replica.send(&token, &message("PatientAdmin", 4)).await;
            (status == 403 && error_text(&response) == "Source is disabled").then_some(())
        }
    })
    .await;
    let elapsed = disabled_at.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "refused within the refresh interval (and some slack): {elapsed:?}"
    );

    // No new token: the right secret hears why, a wrong one learns nothing.
    let (status, body) = token_request(&api, &source.client_id, &source.client_secret).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(body["error_description"], "Source is disabled");
    let (status, body) = token_request(&api, &source.client_id, "cs_wrong").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");

    // The admin API validates the change.
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{}", source.id),
            Some(&json!({ "enabled": "no" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            "/v1/sources/0190a0a0-0000-7000-8000-000000000000",
            Some(&json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{}", source.id),
            Some(&token),
            Some(&json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, 403, "a source cannot enable itself: {body}");

    // Enabled again: its unexpired tokens work again, and it gets new ones.
    set_enabled(&api, &source, true).await;
    let (status, response) = api.send(&token, &message("PatientAdmin", 5)).await;
    assert_eq!(status, 200, "{response}");
    let token = api.token(&source).await;
    carrier_testkit::eventually(Duration::from_secs(10), "the other replica to accept", || {
        let other_replica = other_replica.clone();
        let token = token.clone();
        async move {
            let (status, _) = other_replica.send(&token, &message("PatientAdmin", 6)).await;
            (status == 200).then_some(())
        }
    })
    .await;
    stack.stop().await;
}
