//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), the scheme receivers use to
//! check that a request came from Carrier and was not altered.
//!
//! A destination's signing secret is `whsec_` followed by base64 key bytes. The signature is
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), sent in the
//! `webhook-signature` header; `webhook-id` is the log ID, so it is stable across retries.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signing secret must be 'whsec_' followed by base64")]
    MalformedSecret,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// A new random signing secret (24 key bytes).
pub fn generate_secret() -> String {
    let key: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn key_bytes(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::MalformedSecret)
}

fn mac(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value for one request.
pub fn sign(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let key = key_bytes(secret)?;
    let digest = mac(&key, webhook_id, timestamp, body).finalize().into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(digest)))
}

/// Checks a `webhook-signature` header (space-separated `v1,<base64>` entries) in constant time.
pub fn verify(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    let key = key_bytes(secret)?;
    for entry in header.split(' ') {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(candidate) = STANDARD.decode(encoded) else {
            continue;
        };
        if mac(&key, webhook_id, timestamp, body)
            .verify_slice(&candidate)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example published with the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_own_signature_and_rejects_tampering() {
        let secret = generate_secret();
        let header = sign(&secret, "log-1", 1_700_000_000, b"body").unwrap();
        assert_eq!(verify(&secret, "log-1", 1_700_000_000, b"body", &header), Ok(()));
        assert_eq!(
            verify(&secret, "log-1", 1_700_000_000, b"bodx", &header),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, "log-2", 1_700_000_000, b"body", &header),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            sign("whsec_***", "id", 1, b""),
            Err(SignatureError::MalformedSecret)
        );
    }
}
