//! `Idempotency-Key`: a sender that retries a POST (its connection dropped, it timed out) gets
//! the original answer, with the same message and log IDs, instead of sending the message twice.
//!
//! Keys belong to the calling source and live for `idempotency_window_secs` (24 h by default),
//! in Postgres (`idempotency_keys`), so every ingress replica sees them and they survive restarts.
//! Decisions, beside the code because none of them is obvious:
//!
//! - **Claim before writing.** The first request with a key inserts a `pending` row; a second
//!   request with the key while that write is in progress is answered 409 with `Retry-After`
//!   (it must not write a second copy, and it cannot know the first one's outcome yet).
//! - **Same key, different request → 400.** The key is bound to a SHA-256 of what was asked
//!   (data model, event type, test flag, destinations, body). Answering with the IDs of another
//!   message would tell the sender that a message it never sent was delivered.
//! - **IDs are chosen before the write and stored with the claim.** If the write fails (502,
//!   503, 504) the claim becomes `failed` and the next request with the key takes it over; if
//!   the holder died mid-way, its claim is abandoned after `produce_timeout_ms` + 30 s and taken
//!   over too. Either way the new request reuses the stored IDs, so even a write that landed
//!   after all (a 504 whose record the broker kept) reaches receivers with the same message and
//!   log IDs, which they can recognise.
//! - **The store is required when a key is sent.** If Postgres cannot be reached the request is
//!   refused with 503 and `Retry-After` (the sender asked for at-most-once sending, and it is
//!   safe to retry); requests without the header do not touch Postgres at all.
//! - **A replayed answer** is the original 200 (with `Idempotent-Replayed: true`); errors are
//!   never replayed, since nothing was accepted.

use std::time::Duration;

use axum::http::HeaderMap;
use carrier_proto::records_v1::Route;
use carrier_proto::ErrorKind;
use carrier_store::sqlx::{self, PgPool, Row};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::submission::{Accepted, Submission};
use crate::error::ApiError;

/// The request header (case-insensitive, as every HTTP header).
pub const HEADER: &str = "idempotency-key";
/// The response header on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted key (a UUID is 36; some senders hash a business key, e.g. to 64 hex digits).
pub const MAX_KEY_LEN: usize = 255;

/// The key of a request, if it sent one: 1 to 255 printable ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"
        ))
    };
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(invalid());
    }
    Ok(Some(key.to_string()))
}

/// What the request asked for, as a digest: two requests with the same fingerprint are the same
/// request. Fields are length-prefixed so no two different requests can concatenate equally.
pub fn fingerprint(submission: &Submission, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(submission.data_model.as_bytes());
    field(submission.event_type.as_bytes());
    field(&[submission.test as u8]);
    for destination_id in &submission.destination_ids {
        field(destination_id.as_bytes());
    }
    field(body);
    hash.finalize().to_vec()
}

/// Where the idempotency rows live and for how long.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// How long a key is remembered.
    window: Duration,
    /// How long a `pending` claim may be held before another request takes it over.
    abandoned_after: Duration,
}

/// The outcome of claiming a key.
pub enum Claim {
    /// This request holds the key and writes the message. `previous` holds the IDs of an
    /// earlier holder whose write failed or was abandoned (reuse them when the routes match).
    Held { previous: Option<Accepted> },
    /// The key's message was accepted before: answer with its IDs.
    Replay(Accepted),
}

impl Store {
    pub fn new(pool: PgPool, window: Duration, produce_timeout: Duration) -> Self {
        Self {
            pool,
            window,
            abandoned_after: produce_timeout + Duration::from_secs(30),
        }
    }

    /// Claims `key` for this request, or answers why not (409 in progress, 400 different
    /// request, 503 store unreachable).
    pub async fn claim(&self, source_id: &str, key: &str, fingerprint: &[u8]) -> Result<Claim, ApiError> {
        // One statement: insert, or take over a row that expired, failed or was abandoned by a
        // holder that died. Anything else (done, or pending and alive) returns no row.
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys AS k (source_id, key, fingerprint, state)
             VALUES ($1, $2, $3, 'pending')
             ON CONFLICT (source_id, key) DO UPDATE SET
                state = 'pending',
                fingerprint = EXCLUDED.fingerprint,
                claimed_at = now(),
                created_at = CASE WHEN k.created_at < now() - make_interval(secs => $4) THEN now() ELSE k.created_at END,
                message_id = CASE WHEN k.created_at < now() - make_interval(secs => $4) THEN NULL ELSE k.message_id END,
                routes = CASE WHEN k.created_at < now() - make_interval(secs => $4) THEN NULL ELSE k.routes END
             WHERE k.created_at < now() - make_interval(secs => $4)
                OR (k.fingerprint = EXCLUDED.fingerprint
                    AND (k.state = 'failed'
                         OR (k.state = 'pending' AND k.claimed_at < now() - make_interval(secs => $5))))
             RETURNING message_id, routes",
        )
        .bind(source_id)
        .bind(key)
        .bind(fingerprint)
        .bind(self.window.as_secs_f64())
        .bind(self.abandoned_after.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        if let Some(row) = taken {
            let previous = accepted(row.get("message_id"), row.get("routes"));
            count(if previous.is_some() { "taken_over" } else { "new" });
            return Ok(Claim::Held { previous });
        }

        let row = sqlx::query(
            "SELECT state, fingerprint, message_id, routes FROM idempotency_keys
             WHERE source_id = $1 AND key = $2",
        )
        .bind(source_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            // Purged between the two statements: the key is free again, but say so honestly.
            count("in_progress");
            return Err(in_progress());
        };
        if row.get::<Vec<u8>, _>("fingerprint") != fingerprint {
            count("mismatch");
            return Err(ApiError::bad_request(
                "Idempotency-Key was already used with a different request; use a new key for a new message",
            ));
        }
        match (
            row.get::<String, _>("state").as_str(),
            accepted(row.get("message_id"), row.get("routes")),
        ) {
            ("done", Some(accepted)) => {
                count("replayed");
                Ok(Claim::Replay(accepted))
            }
            _ => {
                count("in_progress");
                Err(in_progress())
            }
        }
    }

    /// Stores the IDs this request is about to write, before writing them.
    pub async fn record_ids(&self, source_id: &str, key: &str, accepted: &Accepted) -> Result<(), ApiError> {
        let routes: Vec<Value> = accepted
            .routes
            .iter()
            .map(|route| json!({ "log_id": route.log_id, "destination_id": route.destination_id }))
            .collect();
        sqlx::query(
            "UPDATE idempotency_keys SET message_id = $3, routes = $4, claimed_at = now()
             WHERE source_id = $1 AND key = $2",
        )
        .bind(source_id)
        .bind(key)
        .bind(&accepted.message_id)
        .bind(Value::Array(routes))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// Marks the claim `done` (the broker acknowledged) or `failed` (the next request with the
    /// key takes it over). If this cannot be stored the answer still stands: the claim stays
    /// `pending` and is taken over, with the same IDs, once abandoned.
    ///
    /// This one write does not wait for Postgres to flush it (`synchronous_commit = off`): if a
    /// crash loses it, the claim is `pending` with its IDs, which is exactly the case above. It
    /// saves a disk flush on every keyed request (see the protection benchmark).
    pub async fn finish(&self, source_id: &str, key: &str, accepted: bool) {
        let result = async {
            let mut transaction = self.pool.begin().await?;
            sqlx::query("SET LOCAL synchronous_commit TO OFF")
                .execute(&mut *transaction)
                .await?;
            sqlx::query("UPDATE idempotency_keys SET state = $3 WHERE source_id = $1 AND key = $2")
                .bind(source_id)
                .bind(key)
                .bind(if accepted { "done" } else { "failed" })
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await
        }
        .await;
        if let Err(error) = result {
            count("finish_failed");
            tracing::warn!(%error, source_id, accepted, "could not record an idempotency key's outcome; a retry with the key after {}s resends with the same IDs", self.abandoned_after.as_secs());
        }
    }

    /// One purge pass: every expired key, at most 10,000 rows per statement.
    pub async fn purge_once(&self) -> Result<u64, sqlx::Error> {
        carrier_store::in_batches(10_000, || async {
            Ok(sqlx::query(
                "DELETE FROM idempotency_keys WHERE ctid IN (
                    SELECT ctid FROM idempotency_keys
                    WHERE created_at < now() - make_interval(secs => $1) LIMIT 10000)",
            )
            .bind(self.window.as_secs_f64())
            .execute(&self.pool)
            .await?
            .rows_affected())
        })
        .await
    }
}

fn accepted(message_id: Option<String>, routes: Option<Value>) -> Option<Accepted> {
    let routes = routes?
        .as_array()?
        .iter()
        .map(|route| {
            Some(Route {
                log_id: route.get("log_id")?.as_str()?.to_string(),
                destination_id: route.get("destination_id")?.as_str()?.to_string(),
            })
        })
        .collect::<Option<Vec<Route>>>()?;
    Some(Accepted {
        message_id: message_id?,
        routes,
        replayed: false,
    })
}

fn in_progress() -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        "A request with this Idempotency-Key is still in progress; retry after the Retry-After delay",
    )
    .with_retry_after(1)
}

fn store_error(error: sqlx::Error) -> ApiError {
    count("store_unavailable");
    tracing::warn!(%error, "idempotency store (Postgres) unreachable; refusing the request with 503");
    ApiError::new(
        ErrorKind::Overloaded,
        "Idempotency-Key cannot be checked right now; retry after the Retry-After delay",
    )
}

fn count(outcome: &str) {
    crate::metrics::metrics()
        .idempotency
        .with_label_values(&[outcome])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, axum::http::HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(key(&headers(b" order-42 ")).unwrap().as_deref(), Some("order-42"));
        let longest = "k".repeat(MAX_KEY_LEN);
        assert_eq!(key(&headers(longest.as_bytes())).unwrap(), Some(longest.clone()));
        for bad in [&b""[..], b"   ", &[b'k'; MAX_KEY_LEN + 1], b"caf\xc3\xa9"] {
            let error = key(&headers(bad)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest);
            assert_eq!(
                error.text,
                "Idempotency-Key must be 1 to 255 printable ASCII characters"
            );
        }
    }

    #[test]
    fn the_fingerprint_changes_with_every_part_of_the_request() {
        let submission = Submission {
            data_model: "Results".into(),
            event_type: "New".into(),
            test: false,
            destination_ids: vec!["d1".into()],
        };
        let base = fingerprint(&submission, b"{}");
        assert_eq!(base, fingerprint(&submission, b"{}"));
        assert_ne!(base, fingerprint(&submission, b"{ }"));
        for changed in [
            Submission {
                test: true,
                ..submission.clone()
            },
            Submission {
                event_type: "Update".into(),
                ..submission.clone()
            },
            Submission {
                destination_ids: vec![],
                ..submission.clone()
            },
            // Moving bytes between fields is a different request.
            Submission {
                data_model: "ResultsN".into(),
                event_type: "ew".into(),
                ..submission.clone()
            },
        ] {
            assert_ne!(base, fingerprint(&changed, b"{}"));
        }
    }

    /// A store on a fresh database of the test Postgres (`CARRIER_TEST_POSTGRES`).
    async fn store(window: Duration, abandoned_after: Duration) -> Store {
        let base = std::env::var("CARRIER_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let url = format!("{base}/carrier_idempotency_{}", uuid::Uuid::new_v4().simple());
        let pool = carrier_store::connect_and_migrate(&url, 2, Duration::from_secs(10))
            .await
            .expect("test Postgres (CARRIER_TEST_POSTGRES)");
        Store {
            pool,
            window,
            abandoned_after,
        }
    }

    fn ids(message_id: &str) -> Accepted {
        Accepted {
            message_id: message_id.into(),
            routes: vec![Route {
                log_id: format!("{message_id}-log"),
                destination_id: "d1".into(),
            }],
            replayed: false,
        }
    }

    fn previous(claim: Claim) -> Option<String> {
        match claim {
            Claim::Held { previous } => previous.map(|accepted| accepted.message_id),
            Claim::Replay(_) => panic!("expected the key to be held, not replayed"),
        }
    }

    #[tokio::test]
    async fn a_key_is_held_once_replayed_when_done_and_taken_over_with_its_ids_when_failed() {
        let store = store(Duration::from_secs(3600), Duration::from_secs(3600)).await;
        let (source, key, request) = ("s1", "order-42", b"request".as_slice());
        assert_eq!(previous(store.claim(source, key, request).await.unwrap()), None);

        let busy = store
            .claim(source, key, request)
            .await
            .err()
            .expect("held elsewhere");
        assert_eq!((busy.kind, busy.retry_after_secs), (ErrorKind::Conflict, Some(1)));
        let other = store
            .claim(source, key, b"another request")
            .await
            .err()
            .expect("mismatch");
        assert_eq!(other.kind, ErrorKind::BadRequest);
        assert_eq!(
            other.text,
            "Idempotency-Key was already used with a different request; use a new key for a new message"
        );
        // Keys belong to their source.
        assert_eq!(previous(store.claim("s2", key, request).await.unwrap()), None);

        // The write failed: the next request takes the key over, with the stored IDs.
        store.record_ids(source, key, &ids("m1")).await.unwrap();
        store.finish(source, key, false).await;
        assert_eq!(
            previous(store.claim(source, key, request).await.unwrap()).as_deref(),
            Some("m1")
        );
        store.finish(source, key, true).await;
        match store.claim(source, key, request).await.unwrap() {
            Claim::Replay(accepted) => {
                assert_eq!(accepted.message_id, "m1");
                assert_eq!(accepted.routes, ids("m1").routes);
            }
            Claim::Held { .. } => panic!("a done key replays"),
        }
        let other = store
            .claim(source, key, b"another request")
            .await
            .err()
            .expect("mismatch");
        assert_eq!(
            other.kind,
            ErrorKind::BadRequest,
            "a done key is bound to its request"
        );
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_taken_over_and_an_expired_key_is_new_and_purged() {
        let store = store(Duration::from_secs(3600), Duration::ZERO).await;
        let request = b"request".as_slice();
        assert_eq!(previous(store.claim("s1", "k", request).await.unwrap()), None);
        store.record_ids("s1", "k", &ids("m1")).await.unwrap();
        // Its holder died before finishing: taken over at once here (abandoned_after = 0).
        assert_eq!(
            previous(store.claim("s1", "k", request).await.unwrap()).as_deref(),
            Some("m1")
        );
        store.finish("s1", "k", true).await;

        let expired = Store {
            window: Duration::ZERO,
            ..store.clone()
        };
        assert_eq!(
            previous(expired.claim("s1", "k", b"a new message").await.unwrap()),
            None,
            "past the window a key is new, whatever it was used for"
        );
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '2 days'")
            .execute(&store.pool)
            .await
            .unwrap();
        let day = Store {
            window: Duration::from_secs(24 * 3600),
            ..store.clone()
        };
        assert_eq!(day.purge_once().await.unwrap(), 1);
        assert_eq!(day.purge_once().await.unwrap(), 0);
    }
}
