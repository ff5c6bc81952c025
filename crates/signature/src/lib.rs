//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), the scheme receivers use to
//! check that a request came from Carrier and was not altered.
//!
//! A destination's signing secret is `whsec_` followed by base64 key bytes. The signature is
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), sent in the
//! `webhook-signature` header; `webhook-id` is the log ID, so it is stable across retries.
//!
//! A receiver checks a request with [`verify`]: the signature must match and `webhook-timestamp`
//! must be within [`TIMESTAMP_TOLERANCE_SECS`] (5 minutes, either side) of the receiver's clock,
//! so a captured request cannot be replayed later. [`verify_at`] takes the time instead of
//! reading the system clock (tests, or a receiver with a clock of its own).
#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// How far `webhook-timestamp` may be from the receiver's clock, either side (Standard Webhooks:
/// 5 minutes). Older requests may be replays; newer ones were signed by a clock too far ahead.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signing secret must be 'whsec_' followed by base64")]
    MalformedSecret,
    #[error("no v1 signature matches")]
    Mismatch,
    /// The request's timestamp is more than [`TIMESTAMP_TOLERANCE_SECS`] from `now`: possibly a
    /// replay of an old request. Nothing about its signature is said.
    #[error("webhook-timestamp {timestamp} is more than {TIMESTAMP_TOLERANCE_SECS} s from now ({now})")]
    TimestampOutOfTolerance { timestamp: i64, now: i64 },
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

/// Checks a request as a receiver should: its `webhook-timestamp` (`timestamp`, Unix seconds)
/// within [`TIMESTAMP_TOLERANCE_SECS`] of the system clock, and its `webhook-signature`
/// (`header`, space-separated `v1,<base64>` entries) matching in constant time.
pub fn verify(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<(), SignatureError> {
    verify_at(secret, webhook_id, timestamp, body, header, unix_now())
}

/// [`verify`] at `now` (Unix seconds) instead of the system clock.
pub fn verify_at(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let key = key_bytes(secret)?;
    if timestamp.abs_diff(now) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::TimestampOutOfTolerance { timestamp, now });
    }
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

/// The system clock in Unix seconds (0 before 1970, which no request is signed at).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
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
        // Verified as a receiver would have, a few seconds after it was sent.
        assert_eq!(
            verify_at(
                secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                body,
                &signature,
                1614265333
            ),
            Ok(())
        );
    }

    #[test]
    fn verify_accepts_own_signature_and_rejects_tampering() {
        let secret = generate_secret();
        let now = 1_700_000_000;
        let header = sign(&secret, "log-1", now, b"body").unwrap();
        assert_eq!(verify_at(&secret, "log-1", now, b"body", &header, now), Ok(()));
        assert_eq!(
            verify_at(&secret, "log-1", now, b"bodx", &header, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_at(&secret, "log-2", now, b"body", &header, now),
            Err(SignatureError::Mismatch)
        );
        // Several signatures (a secret being rotated): any v1 entry may match.
        let other = sign(&generate_secret(), "log-1", now, b"body").unwrap();
        assert_eq!(
            verify_at(&secret, "log-1", now, b"body", &format!("{other} {header}"), now),
            Ok(())
        );
        assert_eq!(
            sign("whsec_***", "id", 1, b""),
            Err(SignatureError::MalformedSecret)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_five_minutes_either_side_of_now() {
        let secret = generate_secret();
        let sent = 1_700_000_000;
        let header = sign(&secret, "log-1", sent, b"body").unwrap();
        let at = |now: i64| verify_at(&secret, "log-1", sent, b"body", &header, now);
        // Received up to 300 s later, or by a clock up to 300 s behind the sender's.
        assert_eq!(at(sent + 300), Ok(()));
        assert_eq!(at(sent - 300), Ok(()));
        assert_eq!(
            at(sent + 301),
            Err(SignatureError::TimestampOutOfTolerance {
                timestamp: sent,
                now: sent + 301
            }),
            "a replay of an old request"
        );
        assert_eq!(
            at(sent - 301),
            Err(SignatureError::TimestampOutOfTolerance {
                timestamp: sent,
                now: sent - 301
            }),
            "a timestamp from the future"
        );
        // A correctly signed request with a far-off timestamp is refused too, and a tampered
        // one within the tolerance still does not verify.
        assert!(matches!(
            verify_at(
                &secret,
                "log-1",
                0,
                b"body",
                &sign(&secret, "log-1", 0, b"body").unwrap(),
                sent
            ),
            Err(SignatureError::TimestampOutOfTolerance { .. })
        ));
        assert!(matches!(
            verify_at(&secret, "log-1", i64::MIN, b"body", &header, i64::MAX),
            Err(SignatureError::TimestampOutOfTolerance { .. })
        ));
        assert_eq!(
            verify_at(&secret, "log-1", sent, b"bodx", &header, sent + 299),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn verify_uses_the_system_clock() {
        let secret = generate_secret();
        let now = unix_now();
        let header = sign(&secret, "log-1", now, b"body").unwrap();
        assert_eq!(verify(&secret, "log-1", now, b"body", &header), Ok(()));
        let old = now - TIMESTAMP_TOLERANCE_SECS - 60;
        let stale = sign(&secret, "log-1", old, b"body").unwrap();
        assert!(matches!(
            verify(&secret, "log-1", old, b"body", &stale),
            Err(SignatureError::TimestampOutOfTolerance { .. })
        ));
    }

    proptest::proptest! {
        /// Whatever the times, a request verifies exactly when its timestamp is within the
        /// tolerance of `now`, and never with another body.
        #[test]
        fn verification_depends_on_the_distance_from_now_alone(
            sent in -4_000_000_000i64..4_000_000_000,
            skew in -1_000i64..1_000,
        ) {
            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
            let header = sign(secret, "log-1", sent, b"body").unwrap();
            let result = verify_at(secret, "log-1", sent, b"body", &header, sent + skew);
            proptest::prop_assert_eq!(result.is_ok(), skew.abs() <= TIMESTAMP_TOLERANCE_SECS);
            proptest::prop_assert!(verify_at(secret, "log-1", sent, b"other", &header, sent).is_err());
        }
    }
}
