//! `private_key_jwt` at `POST /oauth/token` (RFC 7523): a source with a registered public key
//! gets tokens for assertions signed by its private key, once per assertion.

use carrier_testkit::client::Api;
use carrier_testkit::keys::{assertion_claims, SigningKey};
use carrier_testkit::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `POST /oauth/token` with a client assertion (form-encoded); status and JSON body.
async fn token_with(api: &Api, client_id: Option<&str>, assertion: &str) -> (u16, Value) {
    let mut form = format!(
        "grant_type=client_credentials&client_assertion_type={}&client_assertion={assertion}",
        JWT_BEARER.replace(':', "%3A")
    );
    if let Some(client_id) = client_id {
        form.push_str(&format!("&client_id={client_id}"));
    }
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", api.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("ingress answers");
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    (status, body)
}

fn description(body: &Value) -> String {
    body["error_description"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_authenticates_with_a_signed_client_assertion_once_per_assertion() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let audience = stack.token_url();
    let organization = api.create_organization("Key Clinic").await;
    let key = SigningKey::es384();

    let (status, body) = api
        .admin(
            reqwest::Method::POST,
            "/v1/sources",
            Some(&json!({ "organization_id": organization, "name": "EHR", "environment": "production", "public_jwk": key.public_jwk })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["public_jwk"], key.public_jwk);
    let client_id = body["client_id"].as_str().unwrap().to_string();
    let source_id = body["id"].as_str().unwrap().to_string();

    // A valid assertion (ES384) gets a token that works.
    let assertion = key.sign(&assertion_claims(&client_id, &audience));
    let (status, body) = token_with(api, Some(&client_id), &assertion).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = api.log(&token, "0190a0a0-0000-7000-8000-000000000000").await;
    assert_eq!(
        status, 404,
        "the token is accepted; the log does not exist: {body}"
    );

    // The same assertion again is a replay.
    let (status, body) = token_with(api, Some(&client_id), &assertion).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(description(&body).contains("jti was already used"), "{body}");

    // client_id is optional: iss names the client.
    let (status, body) = token_with(api, None, &key.sign(&assertion_claims(&client_id, &audience))).await;
    assert_eq!(status, 200, "{body}");

    // Refusals name what is wrong.
    let mut claims = assertion_claims(&client_id, "https://elsewhere.example.org/oauth/token");
    let (status, body) = token_with(api, Some(&client_id), &key.sign(&claims)).await;
    assert_eq!(status, 401, "{body}");
    assert!(description(&body).contains("aud must be"), "{body}");
    claims = assertion_claims(&client_id, &audience);
    claims["exp"] = json!(claims["iat"].as_u64().unwrap() + 3_600);
    let (status, body) = token_with(api, Some(&client_id), &key.sign(&claims)).await;
    assert_eq!(status, 401, "{body}");
    assert!(description(&body).contains("too far ahead"), "{body}");
    claims = assertion_claims(&client_id, &audience);
    claims["exp"] = json!(claims["iat"].as_u64().unwrap() - 120);
    let (status, body) = token_with(api, Some(&client_id), &key.sign(&claims)).await;
    assert_eq!(status, 401, "{body}");
    assert!(description(&body).contains("expired"), "{body}");
    let stranger = SigningKey::es384();
    let (status, body) = token_with(
        api,
        Some(&client_id),
        &stranger.sign(&assertion_claims(&client_id, &audience)),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(description(&body).contains("signature does not verify"), "{body}");
    // A client ID nobody registered is refused in the very same words (issue 11 §10): the answer
    // does not tell which client IDs exist.
    let (status, unknown) = token_with(
        api,
        Some("cl_nobody"),
        &stranger.sign(&assertion_claims("cl_nobody", &audience)),
    )
    .await;
    assert_eq!(status, 401, "{unknown}");
    assert_eq!(description(&unknown), description(&body), "{unknown}");
    let (status, body) = token_with(
        api,
        Some("cl_someone_else"),
        &key.sign(&assertion_claims(&client_id, &audience)),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // A new key (ES256) replaces the old one; the old one stops working.
    let new_key = SigningKey::es256();
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{source_id}"),
            Some(&json!({ "public_jwk": new_key.public_jwk })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token_with(api, None, &new_key.sign(&assertion_claims(&client_id, &audience))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token_with(api, None, &key.sign(&assertion_claims(&client_id, &audience))).await;
    assert_eq!(status, 401, "{body}");

    // A private key is never registered.
    let mut private = new_key.public_jwk.clone();
    private["d"] = json!("c2VjcmV0");
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{source_id}"),
            Some(&json!({ "public_jwk": private })),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A disabled source gets no token, even with a valid assertion.
    let (status, body) = api
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/sources/{source_id}"),
            Some(&json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token_with(api, None, &new_key.sign(&assertion_claims(&client_id, &audience))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(description(&body), "Source is disabled");
    stack.stop().await;
}
