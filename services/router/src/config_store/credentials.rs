//! How sources prove who they are: client secrets (made here, stored as their hash, rotated
//! with an overlap) and `private_key_jwt` client assertions, whose IDs are remembered in Postgres
//! so each is accepted once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::types::chrono::{DateTime, Utc};
use carrier_store::sqlx::{self, Row};
use sha2::{Digest, Sha256};

use super::sources::source_from_row;
use super::validation::parse_id;
use super::{ConfigStore, Result, StoreError, SOURCE_DISABLED};
use crate::client_assertion;

/// The longest a replaced client secret may stay valid.
const MAX_SECRET_OVERLAP_SECS: u32 = 7 * 24 * 60 * 60;

pub(super) fn random_token(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// How a client secret is stored: its SHA-256. The secret is 32 random bytes made here (never
/// chosen by a person), so no dictionary or brute force reaches it through the hash, and a slow
/// password hash would only make `/oauth/token` an easy way to burn the router's CPU.
pub(super) fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ConfigStore {
    /// Forgets the IDs of client assertions that can no longer be used (past their `exp` and the
    /// leeway); run periodically (`PURGE_EVERY` in lib.rs), not at every token request.
    pub async fn purge_used_assertion_ids(&self) -> std::result::Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at < now() - interval '5 minutes'")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Gives the source a new client secret. The replaced one stays valid for `overlap_secs`
    /// (at most [`MAX_SECRET_OVERLAP_SECS`]); a second rotation within the window ends the
    /// first secret's overlap at once (only one previous secret is kept).
    pub async fn rotate_client_secret(&self, id: &str, overlap_secs: u32) -> Result<pb::RotatedSecret> {
        let id = parse_id("source", id)?;
        if overlap_secs > MAX_SECRET_OVERLAP_SECS {
            return Err(StoreError::Invalid(format!(
                "overlap_secs must be at most {MAX_SECRET_OVERLAP_SECS} (7 days)"
            )));
        }
        let client_secret = format!("cs_{}", random_token(32));
        let row = sqlx::query(
            "UPDATE sources SET
                 previous_client_secret_hash = CASE WHEN $3 > 0 THEN client_secret_hash END,
                 previous_secret_expires_at = CASE WHEN $3 > 0 THEN now() + $3 * interval '1 second' END,
                 client_secret_hash = $2
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(secret_hash(&client_secret))
        .bind(i64::from(overlap_secs))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("source {id} does not exist")))?;
        let previous_valid_until_ms = row
            .get::<Option<DateTime<Utc>>, _>("previous_secret_expires_at")
            .map_or(0, |until| until.timestamp_millis());
        tracing::info!(source_id = %id, overlap_secs, "client secret rotated");
        Ok(pb::RotatedSecret {
            source: Some(source_from_row(&row)),
            client_secret,
            previous_valid_until_ms,
        })
    }

    /// Checks client credentials. Unknown client and wrong secret answer the same error, so the
    /// answer reveals nothing about which was wrong; a disabled source is named as such only to
    /// a caller that knows its secret.
    pub async fn authenticate(&self, client_id: &str, client_secret: &str) -> Result<pb::Source> {
        let row = sqlx::query("SELECT * FROM sources WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::BadCredentials)?;
        let offered = secret_hash(client_secret);
        let stored: Vec<u8> = row.get("client_secret_hash");
        // The secret a rotation replaced, until its overlap window ends.
        let previous = row
            .get::<Option<Vec<u8>>, _>("previous_client_secret_hash")
            .zip(row.get::<Option<DateTime<Utc>>, _>("previous_secret_expires_at"))
            .filter(|(_, until)| *until > Utc::now());
        let current_matches = constant_time_eq(&stored, &offered);
        let previous_matches = previous.is_some_and(|(hash, _)| constant_time_eq(&hash, &offered));
        if !current_matches && !previous_matches {
            return Err(StoreError::BadCredentials);
        }
        if !row.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        Ok(source_from_row(&row))
    }

    /// Checks a `private_key_jwt` client assertion (see `client_assertion`) for `audience`, and
    /// records its `jti` so it is never accepted again. Replay protection lives in Postgres with
    /// the rest of the configuration, so it holds across replicas and restarts; when Postgres is
    /// away no assertion is accepted (fail closed: no source can be looked up either).
    pub async fn authenticate_assertion(
        &self,
        client_id: &str,
        assertion: &str,
        audience: &str,
    ) -> Result<pb::Source> {
        let refused = |error: client_assertion::AssertionError| StoreError::Unauthorized(error.to_string());
        let claimed = client_assertion::claimed_client(assertion).map_err(refused)?;
        if !client_id.is_empty() && client_id != claimed {
            return Err(StoreError::Unauthorized(
                "client_assertion: iss must be the client_id".into(),
            ));
        }
        if audience.is_empty() {
            return Err(StoreError::Invalid(
                "audience is required with client_assertion".into(),
            ));
        }
        // An unknown client and one without a key are refused like a bad signature.
        let not_verified = || refused(client_assertion::AssertionError::NotVerified);
        let row = sqlx::query("SELECT * FROM sources WHERE client_id = $1")
            .bind(&claimed)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(not_verified)?;
        let Some(public_jwk) = row.get::<Option<String>, _>("public_jwk") else {
            return Err(not_verified());
        };
        let now_unix = Utc::now().timestamp().max(0) as u64;
        let verified = client_assertion::verify(assertion, &claimed, &public_jwk, audience, now_unix)
            .map_err(refused)?;
        if !row.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        let inserted = sqlx::query(
            "INSERT INTO client_assertion_jtis (client_id, jti, expires_at)
             VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING",
        )
        .bind(&claimed)
        .bind(&verified.jti)
        .bind(verified.expires_unix as f64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Unauthorized(
                "client_assertion: its jti was already used; sign a new assertion for every token request"
                    .into(),
            ));
        }
        Ok(source_from_row(&row))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn constant_time_eq_is_true_only_for_the_same_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"same secret hash", b"same secret hash"));
        assert!(!constant_time_eq(b"same secret hash", b"same secret hasH"));
        assert!(!constant_time_eq(b"Same secret hash", b"same secret hash"));
        // Different lengths, even when one is a prefix of the other.
        assert!(!constant_time_eq(b"same secret", b"same secret hash"));
        assert!(!constant_time_eq(b"same secret hash", b"same secret"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn a_random_token_is_unpadded_url_safe_base64_of_that_many_random_bytes() {
        // The sizes in use: client IDs (12), verification tokens (24), client secrets (32).
        for (bytes, length) in [(0, 0), (12, 16), (24, 32), (32, 43)] {
            let token = random_token(bytes);
            assert_eq!(token.len(), length, "{token}");
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
            assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), bytes);
        }
        let tokens: HashSet<String> = (0..1_000).map(|_| random_token(32)).collect();
        assert_eq!(tokens.len(), 1_000, "every token is new");
    }

    #[test]
    fn a_secret_hash_is_the_secret_s_sha256() {
        let hex = |bytes: Vec<u8>| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
        // The FIPS 180-2 test vector: stored hashes stay comparable across releases.
        assert_eq!(
            hex(secret_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let secret = format!("cs_{}", random_token(32));
        assert_eq!(secret_hash(&secret), secret_hash(&secret));
        assert_eq!(secret_hash(&secret).len(), 32);
        assert_ne!(secret_hash(&secret), secret_hash(&format!("{secret}x")));
    }
}
