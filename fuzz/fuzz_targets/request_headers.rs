//! The `Idempotency-Key` and `Content-Length` headers of the inbound routes: a key is either
//! taken (1 to 255 printable ASCII characters, surrounding blanks trimmed) or refused with a
//! 400; a declared length is refused with a 413 only when it is a number over the limit.
//!
//! Input: `<Idempotency-Key value>\n<Content-Length value>`.
#![no_main]

use carrier_ingress::parsers::{self, http};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 10 * 1024 * 1024;

fuzz_target!(|input: &[u8]| {
    let (key, length) = match input.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &b""[..]),
    };
    let mut headers = http::HeaderMap::new();
    // Bytes no HTTP header can carry never reach a handler.
    let Ok(key_value) = http::HeaderValue::from_bytes(key) else {
        return;
    };
    headers.insert("idempotency-key", key_value);
    let length_value = http::HeaderValue::from_bytes(length).ok();
    if let Some(length_value) = &length_value {
        headers.insert(http::header::CONTENT_LENGTH, length_value.clone());
    }
    match parsers::idempotency_key(&headers) {
        Ok(Some(taken)) => {
            assert!(!taken.is_empty() && taken.len() <= parsers::MAX_IDEMPOTENCY_KEY_LEN);
            assert!(
                taken.bytes().all(|byte| (0x20..=0x7e).contains(&byte)),
                "{taken:?}"
            );
            assert_eq!(
                taken.as_bytes(),
                key.trim_ascii(),
                "the key is the header, trimmed"
            );
        }
        Ok(None) => panic!("the header is there"),
        Err(error) => {
            assert_eq!(parsers::status_of(&error), 400, "{}", error.text);
            assert!(!error.text.is_empty());
        }
    }
    let declared = length_value
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    match parsers::declared_length(&headers, LIMIT) {
        Ok(()) => assert!(
            declared.is_none_or(|length| length <= LIMIT as u64),
            "{declared:?}"
        ),
        Err(error) => {
            assert_eq!(parsers::status_of(&error), 413, "{}", error.text);
            assert!(
                declared.is_some_and(|length| length > LIMIT as u64),
                "{declared:?}"
            );
        }
    }
});
