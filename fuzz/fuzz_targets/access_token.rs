//! Access tokens (`Authorization: Bearer ct2.<key id>.<payload>.<signature>`): any header value is either
//! the operator token, a token this key signed that has not expired, or refused with a 401 (a
//! 403 for a disabled source). No edit of a real token verifies, and every token issued verifies
//! to the source and organization it was issued for.
//!
//! Input: the first byte picks the mode. `0`: the rest is an `Authorization` header value.
//! `1`: the rest is edits (position, byte) applied to a real token, which must then fail unless
//! the edits changed nothing. `2`: the rest is a source ID a token is issued for.
#![no_main]

use carrier_ingress::auth::{self, Caller, SourceToken, TokenSigner};
use carrier_ingress::parsers::{self, http};
use libfuzzer_sys::fuzz_target;

const ADMIN_TOKEN: &str = "operator-token-123";
const ORGANIZATION_ID: &str = "0190d2a4-5b6c-7d8e-9f00-112233445566";

fn source(source_id: &str) -> SourceToken {
    SourceToken {
        source_id: source_id.to_string(),
        organization_id: ORGANIZATION_ID.to_string(),
        environment: "production".to_string(),
    }
}

fn signer() -> TokenSigner {
    let signer = TokenSigner::new(&"k".repeat(32), 300);
    signer.disabled_sources().set("disabled-source", true);
    signer
}

fn authorization(value: &[u8]) -> Option<http::HeaderMap> {
    let value = http::HeaderValue::from_bytes(value).ok()?;
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    Some(headers)
}

fn assert_refused(error: &carrier_ingress::ApiError) {
    let status = parsers::status_of(error);
    assert!(
        status == 401 || status == 403,
        "refused with {status}: {}",
        error.text
    );
    assert!(!error.text.is_empty());
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let signer = signer();
    match mode % 3 {
        0 => {
            let Some(headers) = authorization(rest) else {
                return;
            };
            match auth::source(&headers, &signer) {
                // Nothing but this key's tokens verifies: the fuzzer cannot forge HMAC-SHA256,
                // so any success is a parsing flaw.
                Ok(source) => panic!("a token the fuzzer made verifies: {source:?}"),
                Err(error) => assert_refused(&error),
            }
            match auth::caller(&headers, &signer, ADMIN_TOKEN) {
                Ok(Caller::Operator) => {
                    let token = std::str::from_utf8(rest).unwrap();
                    assert!(token.contains(ADMIN_TOKEN), "{token}");
                }
                Ok(caller) => panic!("a token the fuzzer made verifies: {caller:?}"),
                Err(error) => assert_refused(&error),
            }
            if let Err(error) = auth::operator(&headers, ADMIN_TOKEN) {
                assert_refused(&error);
            }
        }
        1 => {
            let token = signer.issue(&source("source-1"), auth::now_unix());
            let mut edited = token.clone().into_bytes();
            for edit in rest.chunks_exact(2) {
                let at = edit[0] as usize % edited.len();
                edited[at] = edit[1];
            }
            let Ok(edited) = String::from_utf8(edited) else {
                return;
            };
            let verified = signer.verify(&edited, auth::now_unix());
            if edited == token {
                assert_eq!(verified.unwrap().source_id, "source-1");
            } else {
                match verified {
                    Ok(source) => panic!("an edited token verifies: {edited} as {source:?}"),
                    Err(error) => assert_refused(&error),
                }
            }
        }
        _ => {
            let Ok(source_id) = std::str::from_utf8(rest) else {
                return;
            };
            // Source IDs are UUIDs the router assigns; the token's payload separates fields
            // with ':', which no UUID contains.
            if source_id.contains(':') {
                return;
            }
            let now = auth::now_unix();
            let token = signer.issue(&source(source_id), now);
            match signer.verify(&token, now) {
                Ok(verified) => {
                    assert_eq!(verified, source(source_id));
                }
                Err(error) => {
                    assert_eq!(source_id, "disabled-source", "{}", error.text);
                    assert_eq!(parsers::status_of(&error), 403);
                }
            }
            let expired = signer.verify(&token, now + 300);
            assert_refused(&expired.unwrap_err());
        }
    }
});
