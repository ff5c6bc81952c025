//! Issue 11 §9–10: who may see and do what. A source sees and retries only its own
//! environment's logs; secrets rotate without refusing anyone; token answers are not cached;
//! refusals do not tell which client IDs exist.

use std::time::Duration;

use carrier_testkit::client::{message, Api, Sender, SourceCredentials};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{json, Value};

/// `POST /oauth/token` with a client ID and secret: status, `Cache-Control`, JSON body.
async fn token_request(api: &Api, client_id: &str, client_secret: &str) -> (u16, String, Value) {
    let answer = api.token_request(client_id, client_secret).await;
    let cache_control = answer.header("cache-control").to_string();
    (answer.status, cache_control, answer.body)
}

fn with_secret(source: &SourceCredentials, client_secret: &str) -> SourceCredentials {
    SourceCredentials {
        client_secret: client_secret.to_string(),
        ..source.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_secret_rotates_with_an_overlap_and_token_answers_are_not_cached() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let organization = api.create_organization("Rotation Clinic").await;
    let source = api.create_source(&organization, "production").await;

    let (status, cache_control, body) = token_request(api, &source.client_id, &source.client_secret).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache_control, "no-store", "a token answer must not be cached");

    // Unknown client and wrong secret: the same answer, word for word.
    let (unknown_status, _, unknown) = token_request(api, "cl_nobody", "cs_wrong").await;
    let (wrong_status, _, wrong) = token_request(api, &source.client_id, "cs_wrong").await;
    assert_eq!((unknown_status, wrong_status), (401, 401));
    assert_eq!(unknown, wrong, "the refusal does not tell which client IDs exist");

    // Rotation with the default overlap: old and new secrets both work.
    let path = format!("/v1/sources/{}/rotate-secret", source.id);
    let (status, rotated) = api.admin(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(second, source.client_secret);
    assert!(rotated["previous_secret_valid_until"].is_string(), "{rotated}");
    for secret in [&source.client_secret, &second] {
        let (status, _, body) = token_request(api, &source.client_id, secret).await;
        assert_eq!(status, 200, "both secrets work in the overlap: {body}");
    }

    // A rotation without overlap: only the newest secret works, at once.
    let (status, rotated) = api
        .admin(Method::POST, &path, Some(&json!({ "overlap_secs": 0 })))
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["previous_secret_valid_until"].is_null(), "{rotated}");
    let third = rotated["client_secret"].as_str().unwrap().to_string();
    for secret in [&source.client_secret, &second] {
        let (status, _, body) = token_request(api, &source.client_id, secret).await;
        assert_eq!(
            status, 401,
            "a replaced secret past its overlap is refused: {body}"
        );
    }
    let token = api.token(&with_secret(&source, &third)).await;
    assert!(token.starts_with("ct2."), "{token}");

    let (status, body) = api
        .admin(Method::POST, &path, Some(&json!({ "overlap_secs": 700_000 })))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .admin(
            Method::POST,
            "/v1/sources/0190a4d6-0000-7000-8000-000000000000/rotate-secret",
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_signing_key_rotates_across_replicas_without_refusing_a_token() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let receiver = Receiver::start().await;
    let Sender { source, .. } = stack
        .api
        .sender("Key Rotation Clinic", "production", &receiver.url("a"), "Results")
        .await;
    let new_key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string();
    // Step 1: a replica that still signs with the current key but already accepts the new one.
    let accepting_url = stack
        .start_extra_ingress_with(|config| config.accepted_token_signing_keys = vec![new_key.clone()])
        .await;
    // Step 2: a replica that signs with the new key and still accepts the current one.
    let signing_url = stack
        .start_extra_ingress_with(|config| {
            let current = config
                .token_signing_key
                .take()
                .unwrap_or_else(|| carrier_ingress::DEV_TOKEN_SIGNING_KEY.into());
            config.accepted_token_signing_keys = vec![current];
            config.token_signing_key = Some(new_key.clone());
        })
        .await;
    let (accepting, signing) = (stack.api.at(&accepting_url), stack.api.at(&signing_url));
    let old_token = accepting.token(&source).await;
    let new_token = signing.token(&source).await;
    assert_ne!(
        old_token.split('.').nth(1),
        new_token.split('.').nth(1),
        "the tokens name different key IDs"
    );
    for (replica, name) in [(&accepting, "step 1"), (&signing, "step 2")] {
        for token in [&old_token, &new_token] {
            let (status, body) = replica.send(token, &message("Results", 1)).await;
            assert_eq!(status, 200, "{name} accepts both keys' tokens: {body}");
        }
    }
    // A replica that never heard of the new key refuses its tokens: the key ID is what counts.
    let (status, body) = stack.api.send(&new_token, &message("Results", 2)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["Meta"]["Errors"][0]["Text"],
        "Invalid access token: its signature does not verify"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_sees_and_retries_only_its_own_environment_s_logs() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let organization = api.create_organization("Two Environments Hospital").await;
    let production = api.create_source(&organization, "production").await;
    api.subscribed_destination(
        &organization,
        &production,
        &receiver.url("p"),
        "production",
        "Results",
    )
    .await;
    let staging = api.create_source(&organization, "staging").await;
    let production_token = api.token(&production).await;
    let staging_token = api.token(&staging).await;

    let (status, answer) = api.send(&production_token, &message("Results", 1)).await;
    assert_eq!(status, 200, "{answer}");
    let log_id = answer["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string();
    carrier_testkit::eventually(Duration::from_secs(60), "the production log delivered", || {
        let log_id = log_id.clone();
        let production_token = production_token.clone();
        async move {
            let (code, log) = api.log(&production_token, &log_id).await;
            (code == 200 && log["status"] == "delivered").then_some(())
        }
    })
    .await;

    // The staging source of the same organization: the log does not exist for it.
    let (status, body) = api.log(&staging_token, &log_id).await;
    assert_eq!(status, 404, "{body}");
    let (status, found) = api
        .call(
            Method::GET,
            "/v1/logs?status=delivered",
            Some(&staging_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["logs"],
        json!([]),
        "a search finds no production log: {found}"
    );
    let (status, retried) = api
        .call(
            Method::POST,
            "/v1/logs/retry?status=delivered",
            Some(&staging_token),
            None,
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(
        retried["retried"], 0,
        "a bulk retry retries no production log: {retried}"
    );
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/logs/{log_id}/retry"),
            Some(&staging_token),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // The production source and the operator still see it.
    let (status, found) = api
        .call(
            Method::GET,
            "/v1/logs?status=delivered",
            Some(&production_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["logs"][0]["id"], log_id.as_str(), "{found}");
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v1/logs/{log_id}"),
            Some(carrier_ingress::DEV_ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(receiver.received().len(), 1, "nothing was sent again");
    stack.stop().await;
}
