//! `POST /fhir/R4/{type}`: any path type, `Carrier-Test` header and body either yields the
//! resource type as the data model (and `create`, or a Bundle's `type`, as the event type), or
//! is refused with a 400 (a bad request) or a 404 (a path type that is not an R4 resource type).
//!
//! Input: `<path type>\n<Carrier-Test value, empty for none>\n<body>`, so seeds are readable.
#![no_main]

use carrier_ingress::parsers::{self, http};
use libfuzzer_sys::fuzz_target;

/// FHIR R4 `bundle-type`.
const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(3, |byte| *byte == b'\n');
    let (Some(path_type), Some(test_header), body) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let body = body.unwrap_or_default();
    // The router hands the handler a percent-decoded UTF-8 path segment.
    let Ok(path_type) = std::str::from_utf8(path_type) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if !test_header.is_empty() {
        // Bytes no HTTP header can carry never reach a handler.
        let Ok(value) = http::HeaderValue::from_bytes(test_header) else {
            return;
        };
        headers.insert(parsers::FHIR_TEST_HEADER, value);
    }
    let known_type = parsers::FHIR_RESOURCE_TYPES.contains(&path_type);
    match parsers::fhir_resource(path_type, &headers, body) {
        Ok(routing) => {
            assert!(known_type, "{path_type}");
            assert_eq!(routing.data_model, path_type);
            if path_type == "Bundle" {
                assert!(BUNDLE_TYPES.contains(&routing.event_type.as_str()), "{routing:?}");
            } else {
                assert_eq!(routing.event_type, "create");
            }
            assert!(routing.destination_ids.is_empty());
        }
        Err(error) => {
            let status = parsers::status_of(&error);
            match status {
                404 => assert!(!known_type, "{path_type}: {}", error.text),
                400 => assert!(known_type, "{path_type}: {}", error.text),
                _ => panic!("refused with {status}: {}", error.text),
            }
            assert!(!error.text.is_empty());
        }
    }
});
