//! `POST /oauth/token`: any body, as a form, as JSON or under any other `Content-Type`, either
//! yields the grant's parameters or is refused with a 400. Never a panic, never a 5xx.
//!
//! Input: the first byte picks the `Content-Type`, the rest is the body.
#![no_main]

use carrier_ingress::parsers::{self, http};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => Some("application/x-www-form-urlencoded"),
        1 => Some("application/json"),
        2 => Some("application/json; charset=utf-8"),
        _ => None,
    };
    let mut headers = http::HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
    }
    match parsers::token_request(&headers, body) {
        Ok(parameters) => {
            if content_type.is_some_and(|value| value.starts_with("application/json")) {
                // Only string members become parameters, each as sent.
                let value: serde_json::Value = serde_json::from_slice(body).expect("parsed as JSON");
                for (name, parameter) in &parameters {
                    assert_eq!(value[name].as_str(), Some(parameter.as_str()), "{name}");
                }
            } else {
                assert!(std::str::from_utf8(body).is_ok());
                assert!(
                    !parameters.contains_key("")
                        || body.starts_with(b"=")
                        || body.windows(2).any(|w| w == b"&=")
                );
            }
        }
        Err(status) => assert_eq!(status, 400),
    }
});
