//! Access tokens and who a request comes from.
//!
//! An access token is `ct2.<key id>.<payload>.<signature>`: the payload (base64url) is
//! `source_id:organization_id:environment:expires_unix`, the signature an HMAC-SHA256 of
//! `ct2.<key id>.<payload>` under the signing key the key ID names. Checking one needs no
//! database or peer call, so every ingress replica verifies tokens on its own.
//!
//! Key rotation without downtime: the key ID (a digest of the key, not the key) says which key
//! signed a token, and a replica accepts tokens of its `token_signing_key` and of every key in
//! `accepted_token_signing_keys`. To rotate: (1) add the new key to `accepted_token_signing_keys`
//! on every replica; (2) make it the `token_signing_key`, the old one accepted; (3) once
//! `token_ttl_secs` passed, drop the old key. No token is refused at any step.
//!
//! A disabled source's tokens are refused (403 `Source is disabled`) as soon as this replica
//! knows it is disabled: at once on the replica that served the `PATCH`, within
//! `source_status_refresh_ms` on the others (each polls the router's list of disabled sources,
//! see [`DisabledSources`]). The router refuses to route a disabled source's messages as well.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use carrier_internal_auth::AuthenticatedChannel;
use carrier_proto::config_v1::config_service_client::ConfigServiceClient;
use carrier_proto::config_v1::ListDisabledSourcesRequest;
use carrier_proto::ErrorKind;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

const PREFIX: &str = "ct2";

/// The texts of the 401 answers (the e2e status tests assert them).
pub const MISSING_TOKEN: &str = "Missing Authorization header (expected 'Bearer <token>')";
pub const MALFORMED_TOKEN: &str = "Malformed access token (expected a token from /oauth/token)";
pub const BAD_SIGNATURE: &str = "Invalid access token: its signature does not verify";
pub const EXPIRED_TOKEN: &str = "Access token expired; request a new one at /oauth/token";

pub use carrier_proto::error::SOURCE_DISABLED;

/// The sources this replica knows to be disabled.
#[derive(Default)]
pub struct DisabledSources {
    ids: RwLock<Arc<HashSet<String>>>,
}

impl DisabledSources {
    pub fn contains(&self, source_id: &str) -> bool {
        self.ids
            .read()
            .expect("disabled sources lock")
            .contains(source_id)
    }

    /// Replaces the whole set (a poll of the router).
    pub fn replace(&self, ids: HashSet<String>) {
        *self.ids.write().expect("disabled sources lock") = Arc::new(ids);
    }

    /// Records one change this replica made itself (`PATCH /v1/sources/{id}`), before the next poll.
    pub fn set(&self, source_id: &str, disabled: bool) {
        let mut ids = self.ids.write().expect("disabled sources lock");
        let mut updated = HashSet::clone(&ids);
        if disabled {
            updated.insert(source_id.to_string());
        } else {
            updated.remove(source_id);
        }
        *ids = Arc::new(updated);
    }

    /// Polls the router every `interval` until `shutdown`. When the router cannot be reached the
    /// last known set stays (the router itself still refuses a disabled source's messages).
    pub async fn refresh(
        self: Arc<Self>,
        router: ConfigServiceClient<AuthenticatedChannel>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            match router
                .clone()
                .list_disabled_sources(ListDisabledSourcesRequest {})
                .await
            {
                Ok(response) => {
                    self.replace(response.into_inner().source_ids.into_iter().collect());
                    failing_since = None;
                }
                Err(status) => {
                    // A warning once per minute of failure, not per poll.
                    let warn = failing_since.is_none_or(|since| since.elapsed() >= Duration::from_secs(60));
                    if warn {
                        tracing::warn!(code = ?status.code(), message = status.message(), "cannot refresh the disabled sources; keeping the last known list");
                        failing_since = Some(std::time::Instant::now());
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Source(SourceToken),
}

/// What a verified access token says about its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceToken {
    pub source_id: String,
    pub organization_id: String,
    /// The source's environment (`production`, `staging`, ...): a source sees and retries the
    /// logs of this environment only.
    pub environment: String,
}

/// One signing key and its ID.
struct SigningKey {
    id: String,
    key: Vec<u8>,
}

impl SigningKey {
    fn new(key: &str) -> Self {
        use sha2::Digest;
        let digest = Sha256::digest(key.as_bytes());
        let id = digest[..6].iter().map(|byte| format!("{byte:02x}")).collect();
        Self {
            id,
            key: key.as_bytes().to_vec(),
        }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(self.id.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac
    }
}

pub struct TokenSigner {
    /// Signs new tokens (and verifies them).
    signing: SigningKey,
    /// Verify only: the keys of a rotation in progress.
    accepted: Vec<SigningKey>,
    ttl_secs: u64,
    disabled: Arc<DisabledSources>,
}

impl TokenSigner {
    pub fn new(key: &str, ttl_secs: u64) -> Self {
        Self {
            signing: SigningKey::new(key),
            accepted: Vec::new(),
            ttl_secs,
            disabled: Arc::default(),
        }
    }

    /// Also accepts the tokens signed with `keys` (a rotation: see the module header).
    pub fn accepting(mut self, keys: &[String]) -> Self {
        self.accepted = keys.iter().map(|key| SigningKey::new(key)).collect();
        self
    }

    /// The ID of the key new tokens are signed with.
    pub fn key_id(&self) -> &str {
        &self.signing.id
    }

    /// The disabled sources whose tokens [`TokenSigner::verify`] refuses.
    pub fn disabled_sources(&self) -> &Arc<DisabledSources> {
        &self.disabled
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A token for the source, valid `ttl_secs` from `now_unix`.
    pub fn issue(&self, source: &SourceToken, now_unix: u64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!(
            "{}:{}:{}:{}",
            source.source_id,
            source.organization_id,
            source.environment,
            now_unix + self.ttl_secs
        ));
        let signature = URL_SAFE_NO_PAD.encode(self.signing.mac(&payload).finalize().into_bytes());
        format!("{PREFIX}.{}.{payload}.{signature}", self.signing.id)
    }

    /// The source a token was issued to, if its signature holds under a key this replica
    /// accepts, it has not expired and the source is not disabled.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<SourceToken, ApiError> {
        let invalid = || ApiError::unauthorized(MALFORMED_TOKEN);
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(key_id), Some(payload), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let key = std::iter::once(&self.signing)
            .chain(&self.accepted)
            .find(|key| key.id == key_id)
            .ok_or_else(|| ApiError::unauthorized(BAD_SIGNATURE))?;
        key.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| ApiError::unauthorized(BAD_SIGNATURE))?;
        let decoded = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let mut fields = decoded.split(':');
        let (Some(source_id), Some(organization_id), Some(environment), Some(expires), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(invalid());
        };
        let expires: u64 = expires.parse().map_err(|_| invalid())?;
        if now_unix >= expires {
            return Err(ApiError::unauthorized(EXPIRED_TOKEN));
        }
        if self.disabled.contains(source_id) {
            return Err(ApiError::new(ErrorKind::Forbidden, SOURCE_DISABLED));
        }
        Ok(SourceToken {
            source_id: source_id.to_string(),
            organization_id: organization_id.to_string(),
            environment: environment.to_string(),
        })
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized(MISSING_TOKEN))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Malformed Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be 'Bearer <token>'"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller of a request that accepts both the operator token and source tokens.
pub fn caller(headers: &HeaderMap, signer: &TokenSigner, admin_token: &str) -> Result<Caller, ApiError> {
    let token = bearer(headers)?;
    if constant_time_eq(token.as_bytes(), admin_token.as_bytes()) {
        return Ok(Caller::Operator);
    }
    Ok(Caller::Source(signer.verify(token, now_unix())?))
}

/// Only the operator token is accepted.
pub fn operator(headers: &HeaderMap, admin_token: &str) -> Result<(), ApiError> {
    let token = bearer(headers)?;
    if constant_time_eq(token.as_bytes(), admin_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Forbidden,
            "This route needs the operator token",
        ))
    }
}

/// Only a source token is accepted.
pub fn source(headers: &HeaderMap, signer: &TokenSigner) -> Result<SourceToken, ApiError> {
    signer.verify(bearer(headers)?, now_unix())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> SourceToken {
        SourceToken {
            source_id: id.into(),
            organization_id: "org".into(),
            environment: "staging".into(),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_reject_tampering() {
        let signer = TokenSigner::new("k".repeat(32).as_str(), 300);
        let token = signer.issue(&source("src"), 1_000);
        assert!(token.starts_with(&format!("ct2.{}.", signer.key_id())), "{token}");
        assert_eq!(signer.verify(&token, 1_299).unwrap(), source("src"));
        assert!(signer.verify(&token, 1_300).unwrap_err().text.contains("expired"));
        let other = TokenSigner::new("x".repeat(32).as_str(), 300);
        assert_eq!(
            other.verify(&token, 1_000).unwrap_err().text,
            BAD_SIGNATURE,
            "another key's token is refused"
        );
        let mut forged = token.clone();
        let at = token.rfind('.').unwrap() - 2;
        forged.replace_range(at..at + 1, if &token[at..at + 1] == "A" { "B" } else { "A" });
        assert_eq!(signer.verify(&forged, 1_000).unwrap_err().text, BAD_SIGNATURE);
        assert_eq!(signer.verify("garbage", 1_000).unwrap_err().text, MALFORMED_TOKEN);
        assert_eq!(
            signer.verify("ct2.a.b.c.d", 1_000).unwrap_err().text,
            MALFORMED_TOKEN
        );
        assert_eq!(
            signer.verify("ct1.a.b", 1_000).unwrap_err().text,
            MALFORMED_TOKEN,
            "the format before key IDs"
        );
    }

    #[test]
    fn a_key_rotation_refuses_no_token_at_any_step() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        // Before: every replica signs with the old key.
        let before = TokenSigner::new(&old, 300);
        let old_token = before.issue(&source("src"), 1_000);
        // Step 1: the new key is accepted everywhere, not used yet.
        let step_one = TokenSigner::new(&old, 300).accepting(std::slice::from_ref(&new));
        assert!(step_one.verify(&old_token, 1_001).is_ok());
        // Step 2: replicas switch one by one; both kinds of token pass on both kinds of replica.
        let step_two = TokenSigner::new(&new, 300).accepting(std::slice::from_ref(&old));
        let new_token = step_two.issue(&source("src"), 1_001);
        assert_ne!(step_two.key_id(), step_one.key_id());
        for replica in [&step_one, &step_two] {
            assert!(replica.verify(&old_token, 1_002).is_ok());
            assert!(replica.verify(&new_token, 1_002).is_ok());
        }
        // Step 3: the old key is dropped; its tokens have expired by then anyway.
        let after = TokenSigner::new(&new, 300);
        assert!(after.verify(&new_token, 1_100).is_ok());
        assert_eq!(after.verify(&old_token, 1_100).unwrap_err().text, BAD_SIGNATURE);
    }

    #[test]
    fn a_disabled_source_s_tokens_are_refused_until_it_is_enabled_again() {
        let signer = TokenSigner::new("k".repeat(32).as_str(), 300);
        let token = signer.issue(&source("src"), 1_000);
        let other = signer.issue(&source("other"), 1_000);
        signer.disabled_sources().set("src", true);
        let error = signer.verify(&token, 1_001).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Forbidden);
        assert_eq!(error.text, "Source is disabled");
        assert!(
            signer.verify(&other, 1_001).is_ok(),
            "other sources are unaffected"
        );
        assert!(
            signer.verify(&token, 1_300).unwrap_err().text.contains("expired"),
            "an expired token is expired first"
        );
        signer.disabled_sources().replace(HashSet::new());
        assert!(signer.verify(&token, 1_001).is_ok());
    }
}
