//! Property tests over everything ingress parses from a request before the durable write:
//! the Data Model API's `Meta`, FHIR resources and paths, the OAuth token request, the
//! `Authorization`, `Idempotency-Key`, `Content-Length` and `X-Forwarded-For` headers.
//!
//! For any input, a parser returns (never panics), and a refusal is always a 4xx: bad input is
//! the sender's to fix, never a 500. Inputs are random bytes, random JSON, and JSON shaped like
//! the real requests with every field of a random type, so the generator reaches the branches
//! past "not JSON". `PROPTEST_CASES` raises the number of cases (default 1,000 per property).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::submission::Submission;
use crate::error::ApiError;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(1_000),
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("Patient"),
            Just("Bundle"),
            Just("message"),
            Just("New"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}".boxed(),
                    Just("ID".to_string()).boxed(),
                    Just("resourceType".to_string()).boxed(),
                    Just("type".to_string()).boxed(),
                ],
                inner,
                0..6
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A Data Model API body whose `Meta` fields are present or not, each of any type.
fn data_model_body() -> BoxedStrategy<Value> {
    let field = || prop::option::of(any_json());
    (field(), field(), field(), field(), any_json())
        .prop_map(|(data_model, event_type, test, destinations, rest)| {
            let mut meta = Map::new();
            for (name, value) in [
                ("DataModel", data_model),
                ("EventType", event_type),
                ("Test", test),
                ("Destinations", destinations),
            ] {
                if let Some(value) = value {
                    meta.insert(name.into(), value);
                }
            }
            json!({ "Meta": meta, "Patient": rest })
        })
        .boxed()
}

/// A FHIR body: a `resourceType` (a real one, or anything), a `type`, and anything else.
fn fhir_body() -> BoxedStrategy<Value> {
    (
        prop_oneof![
            prop::sample::select(super::fhir::R4_RESOURCE_TYPES).prop_map(|t| json!(t)),
            any_json()
        ],
        prop::option::of(any_json()),
        any_json(),
    )
        .prop_map(|(resource_type, bundle_type, rest)| {
            let mut body = json!({ "resourceType": resource_type, "entry": rest });
            if let Some(bundle_type) = bundle_type {
                body["type"] = bundle_type;
            }
            body
        })
        .boxed()
}

/// Bytes that are sometimes JSON, sometimes almost JSON, sometimes not at all.
fn body_bytes(json: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json.clone().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        // Truncated or corrupted JSON.
        (json, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(value, at, byte)| {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            let at = at.index(bytes.len());
            if byte % 2 == 0 {
                bytes.truncate(at);
            } else {
                bytes[at] = byte;
            }
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Any header value HTTP can carry (visible ASCII, spaces, tabs, obs-text bytes).
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(prop_oneof![32u8..=126, Just(b'\t'), 128u8..=255], 0..80)
        .prop_map(|bytes| HeaderValue::from_bytes(&bytes).expect("valid header bytes"))
}

fn headers(pairs: Vec<(&'static str, HeaderValue)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(HeaderName::from_static(name), value);
    }
    headers
}

fn refused_with_4xx<T>(result: Result<T, ApiError>) -> Result<(), TestCaseError> {
    if let Err(error) = result {
        let status = error.kind.http_status();
        prop_assert!(
            (400..500).contains(&status),
            "refused with {status}: {}",
            error.text
        );
        prop_assert!(!error.text.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn data_model_requests_parse_or_are_refused_with_a_4xx(body in body_bytes(data_model_body())) {
        let result = super::endpoint::parse_meta(&body);
        if let Ok(Submission { data_model, event_type, .. }) = &result {
            prop_assert!(!data_model.trim().is_empty() && !event_type.trim().is_empty());
        }
        refused_with_4xx(result)?;
    }

    #[test]
    fn fhir_requests_parse_or_are_refused_with_a_4xx(
        path_type in prop_oneof![
            prop::sample::select(super::fhir::R4_RESOURCE_TYPES).prop_map(String::from),
            ".{0,20}",
        ],
        body in body_bytes(fhir_body()),
        test_header in prop::option::of(header_value()),
    ) {
        refused_with_4xx(super::fhir::check_resource_type(&path_type))?;
        let headers = headers(test_header.map(|v| (super::fhir::TEST_HEADER, v)).into_iter().collect());
        refused_with_4xx(super::fhir::parse(&path_type, &headers, &body))?;
    }

    #[test]
    fn token_requests_parse_or_are_refused_with_a_4xx(
        json in any::<bool>(),
        body in body_bytes(any_json()),
        form in "[a-z_=&%+0-9A-F]{0,64}",
    ) {
        let content_type = if json { "application/json" } else { "application/x-www-form-urlencoded" };
        let headers = headers(vec![("content-type", HeaderValue::from_static(content_type))]);
        for body in [&body[..], form.as_bytes()] {
            if let Err(response) = super::oauth::parameters(&headers, body) {
                prop_assert!(response.status().is_client_error(), "{}", response.status());
            }
        }
    }

    #[test]
    fn request_headers_parse_or_are_refused_with_a_4xx(
        authorization in prop_oneof![
            header_value(),
            ".{0,60}".prop_map(|token| HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or(HeaderValue::from_static("Bearer"))),
            "ct2\\.[A-Za-z0-9_.-]{0,60}".prop_map(|token| HeaderValue::from_str(&format!("Bearer {token}")).unwrap()),
        ],
        idempotency_key in header_value(),
        content_length in header_value(),
        forwarded_for in prop::collection::vec(header_value(), 0..3),
    ) {
        let signer = crate::auth::TokenSigner::new(&"k".repeat(32), 300);
        let request = headers(vec![
            ("authorization", authorization),
            ("idempotency-key", idempotency_key),
            ("content-length", content_length),
        ]);
        refused_with_4xx(crate::auth::source(&request, &signer))?;
        refused_with_4xx(crate::auth::caller(&request, &signer, "operator-token-123"))?;
        refused_with_4xx(super::idempotency::key(&request))?;
        refused_with_4xx(super::body::check_declared_length(&request, 10 * 1024 * 1024))?;
        let trusted = [crate::rate_limit::client_ip::parse_trusted_proxy("127.0.0.0/8").unwrap()];
        let peer = "127.0.0.1".parse().unwrap();
        crate::rate_limit::client_ip::client_ip(
            peer,
            forwarded_for.iter().map(|value| value.as_bytes()),
            &trusted,
        );
    }
}
