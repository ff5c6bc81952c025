//! The log store's search (`GET /v1/logs`), its tenant isolation, retention purge and bulk retry
//! (`POST /v1/logs/retry`), against real Postgres (and the whole pipeline for bulk retry).
//!
//! The search tests write logs with the notifier's own store code (`log_store::write`), so
//! they control every field (times, statuses, organizations) and know the exact answer.

use std::collections::HashSet;
use std::time::Duration;

use carrier_notifier::log_store;
use carrier_proto::records_v1::{Attempt, AttemptOutcome, LogEvent, LogStatus};
use carrier_store::sqlx::{self, Connection, PgPool};
use carrier_testkit::client::{message, Api, Sender};
use carrier_testkit::receiver::Receiver;
use carrier_testkit::stack::{Stack, StackOptions};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::sequences;

/// Which generated logs a search should find.
type Filter<'a> = Box<dyn Fn(&Expected) -> bool + 'a>;

/// One generated log, as the search should report it.
#[derive(Debug, Clone)]
struct Expected {
    id: String,
    organization_id: String,
    destination_id: String,
    source_id: String,
    status: &'static str,
    data_model: &'static str,
    test: bool,
    received_at: DateTime<Utc>,
}

fn event(log: &Expected) -> LogEvent {
    let status = match log.status {
        "queued" => LogStatus::Queued,
        "delivered" => LogStatus::Delivered,
        "failed" => LogStatus::Failed,
        _ => LogStatus::Cancelled,
    };
    let received_at_ms = log.received_at.timestamp_millis();
    LogEvent {
        log_id: log.id.clone(),
        message_id: Uuid::now_v7().to_string(),
        destination_id: log.destination_id.clone(),
        organization_id: log.organization_id.clone(),
        source_id: log.source_id.clone(),
        data_model: log.data_model.into(),
        event_type: "New".into(),
        test: log.test,
        received_at_ms,
        status: status as i32,
        attempt: (log.status != "queued").then(|| Attempt {
            number: 1,
            started_at_ms: received_at_ms + 5,
            duration_ms: 12,
            outcome: if log.status == "delivered" {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::Failure
            } as i32,
            status_code: if log.status == "delivered" { 200 } else { 500 },
            ..Default::default()
        }),
        at_ms: received_at_ms + 20,
        environment: "staging".into(),
        ..Default::default()
    }
}

async fn write_logs(pool: &PgPool, logs: &[Expected]) {
    let events: Vec<LogEvent> = logs.iter().map(event).collect();
    let refs: Vec<&LogEvent> = events.iter().collect();
    log_store::write(
        pool,
        &refs,
        carrier_notifier::AlertSettings::default().failing_after_attempts as i32,
    )
    .await
    .expect("logs written");
}

/// Every page of `GET /v1/logs?{query}` with `limit`, following `next_cursor`; the IDs in order.
async fn all_pages(api: &Api, token: &str, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/logs?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = api.call(reqwest::Method::GET, &path, Some(token), None).await;
        assert_eq!(status, 200, "GET {path}: {page}");
        let logs = page["logs"].as_array().expect("logs");
        assert!(logs.len() <= limit, "a page holds at most limit logs");
        ids.extend(logs.iter().map(|log| log["id"].as_str().expect("id").to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(logs.len(), limit, "only a full page has a next page");
                cursor = Some(next.to_string());
            }
            None => return ids,
        }
        assert!(ids.len() <= 10_000, "pagination ends");
    }
}

/// The IDs of `logs` matching `keep`, newest first (ties on time broken by ID, descending).
fn newest_first(logs: &[Expected], keep: impl Fn(&Expected) -> bool) -> Vec<String> {
    let mut matching: Vec<&Expected> = logs.iter().filter(|log| keep(log)).collect();
    matching.sort_by(|a, b| {
        (b.received_at, Uuid::parse_str(&b.id).unwrap())
            .cmp(&(a.received_at, Uuid::parse_str(&a.id).unwrap()))
    });
    matching.into_iter().map(|log| log.id.clone()).collect()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searching_logs_filters_pages_newest_first_and_keeps_organizations_apart() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let organization_a = api.create_organization("Search Clinic A").await;
    let organization_b = api.create_organization("Search Clinic B").await;
    let source_a1 = api.create_source(&organization_a, "staging").await;
    let source_a2 = api.create_source(&organization_a, "staging").await;
    let source_b = api.create_source(&organization_b, "staging").await;
    let token_a = api.token(&source_a1).await;
    let token_b = api.token(&source_b).await;
    let destinations_a = [Uuid::now_v7().to_string(), Uuid::now_v7().to_string()];
    let destination_b = Uuid::now_v7().to_string();

    // 90 logs for A and 30 for B, received one second apart in pairs (equal times test the
    // ID tie-break of the cursor), with every status, two data models and some test messages.
    let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap();
    let statuses = [
        "delivered",
        "failed",
        "delivered",
        "queued",
        "cancelled",
        "delivered",
    ];
    let mut logs = Vec::new();
    for index in 0..120usize {
        let in_a = index % 4 != 3;
        logs.push(Expected {
            id: Uuid::new_v4().to_string(),
            organization_id: (if in_a { &organization_a } else { &organization_b }).clone(),
            destination_id: if in_a {
                destinations_a[index % 2].clone()
            } else {
                destination_b.clone()
            },
            source_id: if !in_a {
                source_b.id.clone()
            } else if index % 3 == 0 {
                source_a2.id.clone()
            } else {
                source_a1.id.clone()
            },
            status: statuses[index % statuses.len()],
            data_model: if index % 5 < 2 { "Results" } else { "PatientAdmin" },
            test: index % 7 == 0,
            received_at: start + chrono::Duration::seconds((index / 2) as i64),
        });
    }
    let pool = carrier_store::connect_and_migrate(&stack.database_url, 2, Duration::from_secs(30))
        .await
        .expect("log store");
    // In a few batches, as the notifier writes them.
    for chunk in logs.chunks(50) {
        write_logs(&pool, chunk).await;
    }

    // The operator sees every log; a source only its organization's. All pages, newest first.
    let operator = api.admin_token.clone();
    assert_eq!(
        all_pages(api, &operator, "", 7).await,
        newest_first(&logs, |_| true)
    );
    let in_a = |log: &Expected| log.organization_id == organization_a;
    assert_eq!(all_pages(api, &token_a, "", 500).await, newest_first(&logs, in_a));
    assert_eq!(
        all_pages(api, &token_b, "", 4).await,
        newest_first(&logs, |log| log.organization_id == organization_b)
    );

    // Each filter, and all of them at once, page by page.
    let since = start + chrono::Duration::seconds(10);
    let until = start + chrono::Duration::seconds(40);
    let cases: Vec<(String, Filter<'_>)> = vec![
        (
            format!("destination_id={}", destinations_a[1]),
            Box::new(|log: &Expected| log.destination_id == destinations_a[1]),
        ),
        (
            format!("source_id={}", source_a2.id),
            Box::new(|log: &Expected| log.source_id == source_a2.id),
        ),
        (
            "status=failed".into(),
            Box::new(|log: &Expected| log.status == "failed"),
        ),
        (
            "status=delivered".into(),
            Box::new(|log: &Expected| log.status == "delivered"),
        ),
        (
            "data_model=Results".into(),
            Box::new(|log: &Expected| log.data_model == "Results"),
        ),
        ("test=true".into(), Box::new(|log: &Expected| log.test)),
        ("test=false".into(), Box::new(|log: &Expected| !log.test)),
        (
            format!("since={}&until={}", rfc3339(since), rfc3339(until)),
            Box::new(move |log: &Expected| log.received_at >= since && log.received_at < until),
        ),
        (
            format!("organization_id={organization_b}"),
            Box::new(|log: &Expected| log.organization_id == organization_b),
        ),
        (
            format!(
                "destination_id={}&status=delivered&data_model=PatientAdmin&test=false&since={}",
                destinations_a[0],
                rfc3339(since)
            ),
            Box::new(|log: &Expected| {
                log.destination_id == destinations_a[0]
                    && log.status == "delivered"
                    && log.data_model == "PatientAdmin"
                    && !log.test
                    && log.received_at >= since
            }),
        ),
    ];
    for (query, keep) in &cases {
        let expected = newest_first(&logs, keep);
        assert!(!expected.is_empty(), "{query} matches some logs");
        assert_eq!(
            all_pages(api, &operator, query, 5).await,
            expected,
            "operator, {query}"
        );
        assert_eq!(
            all_pages(api, &token_a, query, 3).await,
            newest_first(&logs, |log| keep(log) && in_a(log)),
            "source of A, {query}"
        );
    }

    // A page carries the fields of GET /v1/logs/{id}, without attempts.
    let (_, page) = api
        .call(reqwest::Method::GET, "/v1/logs?limit=1", Some(&token_a), None)
        .await;
    let first = &page["logs"][0];
    let (status, one) = api.log(&token_a, first["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let mut without_attempts = one.clone();
    without_attempts.as_object_mut().unwrap().remove("attempts");
    assert_eq!(first, &without_attempts);

    // Isolation: another organization's logs are not found, by ID or by any search.
    let log_of_b = logs
        .iter()
        .find(|log| log.organization_id == organization_b)
        .unwrap();
    assert_eq!(api.log(&token_a, &log_of_b.id).await.0, 404);
    assert_eq!(api.log(&token_b, &log_of_b.id).await.0, 200);
    assert_eq!(api.log(&operator, &log_of_b.id).await.0, 200);
    for query in [
        format!("destination_id={destination_b}"),
        format!("source_id={}", source_b.id),
        format!("organization_id={organization_b}"),
    ] {
        assert!(all_pages(api, &token_a, &query, 50).await.is_empty(), "{query}");
    }
    // A cursor from B's pages does not open B's logs to A.
    let (_, page_b) = api
        .call(reqwest::Method::GET, "/v1/logs?limit=1", Some(&token_b), None)
        .await;
    let cursor_b = page_b["next_cursor"].as_str().unwrap();
    let (status, page) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/logs?cursor={cursor_b}"),
            Some(&token_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|log| log["organization_id"] == organization_a.as_str()));

    // Bad parameters are 400s naming the parameter; no token is a 401.
    for (query, text) in [
        (
            "status=lost",
            "Query parameter status must be one of queued, delivered, failed, cancelled, not 'lost'",
        ),
        (
            "limit=501",
            "Query parameter limit must be an integer from 1 to 500, not '501'",
        ),
        (
            "destination_id=abc",
            "Query parameter destination_id must be a UUID, not 'abc'",
        ),
        (
            "cursor=nonsense",
            "Query parameter cursor is not a next_cursor this route returned",
        ),
    ] {
        let answer = api
            .request(
                reqwest::Method::GET,
                &format!("/v1/logs?{query}"),
                Some(&token_a),
                &[],
                None,
            )
            .await;
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.error_text(), text, "{query}");
    }
    assert_eq!(
        api.call(reqwest::Method::GET, "/v1/logs", None, None).await.0,
        401
    );
    pool.close().await;
    stack.stop().await;
}

#[tokio::test]
async fn the_purge_deletes_finished_logs_past_retention_with_their_attempts() {
    carrier_testkit::init_test_logging();
    let database = carrier_testkit::unique("carrier_purge_");
    let url = format!("{}/{database}", carrier_testkit::test_postgres());
    let pool = carrier_store::connect_and_migrate(&url, 2, Duration::from_secs(30))
        .await
        .expect("log store");
    let now = Utc::now();
    let organization = Uuid::now_v7().to_string();
    let log = |status: &'static str, days_ago: i64| Expected {
        id: Uuid::now_v7().to_string(),
        organization_id: organization.clone(),
        destination_id: Uuid::now_v7().to_string(),
        source_id: Uuid::now_v7().to_string(),
        status,
        data_model: "Results",
        test: false,
        received_at: now - chrono::Duration::days(days_ago),
    };
    // Past a 30-day retention: 7 finished logs and one still queued (its destination is still
    // trying). Within it: 3 logs, one a day short of the limit.
    let mut old: Vec<Expected> = (0..7)
        .map(|index| log(["delivered", "failed", "cancelled"][index % 3], 31 + index as i64))
        .collect();
    let old_queued = log("queued", 45);
    let recent = vec![log("delivered", 0), log("failed", 3), log("delivered", 29)];
    old.push(old_queued.clone());
    write_logs(&pool, &old).await;
    write_logs(&pool, &recent).await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(count("SELECT count(*) FROM logs").await, 11);
    assert_eq!(
        count("SELECT count(*) FROM attempts").await,
        10,
        "one per finished log"
    );

    // Batches of 3: three batches (3, 3, 1), all in one pass.
    let cutoff = now - chrono::Duration::days(30);
    let purged = carrier_notifier::retention::purge_older_than(&pool, cutoff, 3)
        .await
        .expect("purge");
    assert_eq!(purged, 7);
    let left: HashSet<String> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM logs")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let mut expected: HashSet<String> = recent.iter().map(|log| log.id.clone()).collect();
    expected.insert(old_queued.id.clone());
    assert_eq!(left, expected, "recent logs and the queued one are kept");
    assert_eq!(
        count("SELECT count(*) FROM attempts").await,
        3,
        "the purged logs' attempts are gone; the kept logs' remain"
    );
    assert_eq!(
        carrier_notifier::retention::purge_older_than(&pool, cutoff, 3)
            .await
            .unwrap(),
        0,
        "a second pass finds nothing"
    );

    pool.close().await;
    drop_database(&database).await;
}

/// Drops a test's own database.
async fn drop_database(database: &str) {
    let admin_url = format!("{}/postgres", carrier_testkit::test_postgres());
    let mut connection = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_purge_deletes_finished_incidents_alerts_and_dead_letters_past_retention_and_keeps_open_or_unsent_ones(
) {
    carrier_testkit::init_test_logging();
    let database = carrier_testkit::unique("carrier_alert_purge_");
    let url = format!("{}/{database}", carrier_testkit::test_postgres());
    let pool = carrier_store::connect_and_migrate(&url, 2, Duration::from_secs(30))
        .await
        .expect("store");
    // An incident: a failing and (if `recovered_days_ago`) a recovered alert, each with an
    // outbox row per channel, all sent unless `pending`.
    let incident = |failing_days_ago: i64, recovered_days_ago: Option<i64>, pending: bool| {
        let pool = pool.clone();
        async move {
            let incident_id = Uuid::now_v7();
            let mut kinds = vec![("failing", failing_days_ago)];
            kinds.extend(recovered_days_ago.map(|days| ("recovered", days)));
            for (kind, days) in kinds {
                let alert_id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO alerts (id, incident_id, kind, destination_id, organization_id, payload, created_at)
                     VALUES ($1, $2, $3, $4, $4, '{}', now() - make_interval(days => $5))",
                )
                .bind(alert_id)
                .bind(incident_id)
                .bind(kind)
                .bind(Uuid::now_v7())
                .bind(days as i32)
                .execute(&pool)
                .await
                .unwrap();
                for channel in ["email", "slack", "kafka"] {
                    let status = if pending && kind == "recovered" && channel == "email" {
                        "pending"
                    } else {
                        "sent"
                    };
                    sqlx::query(
                        "INSERT INTO alert_deliveries (alert_id, channel, status) VALUES ($1, $2, $3)",
                    )
                    .bind(alert_id)
                    .bind(channel)
                    .bind(status)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
            incident_id
        }
    };
    let finished_old = incident(40, Some(35), false).await;
    let unsent_old = incident(40, Some(35), true).await;
    let open_old = incident(40, None, false).await;
    let finished_recent = incident(40, Some(2), false).await;

    let cutoff = Utc::now() - chrono::Duration::days(30);
    let purged = carrier_notifier::retention::purge_alerts_older_than(&pool, cutoff, 1)
        .await
        .expect("purge");
    assert_eq!(purged, 2, "the finished old incident's two alerts");
    let left: HashSet<Uuid> = sqlx::query_scalar("SELECT DISTINCT incident_id FROM alerts")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(left, HashSet::from([unsent_old, open_old, finished_recent]));
    assert!(!left.contains(&finished_old));
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alert_deliveries WHERE alert_id NOT IN (SELECT id FROM alerts)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "outbox rows go with their alerts");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM alert_deliveries")
            .fetch_one(&pool)
            .await
            .unwrap(),
        15,
        "5 alerts kept, 3 channels each"
    );

    // Dead-lettered log events hold what attempts hold (receivers' texts): kept like the logs.
    for days in [40i32, 2] {
        sqlx::query(
            "INSERT INTO dead_letter_events (topic, partition, record_offset, log_id, destination_id, event, error, created_at)
             VALUES ('carrier.log-events', 0, $1, 'l', 'd', '\\x00', 'refused', now() - make_interval(days => $2))",
        )
        .bind(i64::from(days))
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }
    let purged = carrier_notifier::retention::purge_dead_letters_older_than(&pool, cutoff)
        .await
        .expect("purge");
    assert_eq!(purged, 1, "the dead letter past retention");
    let left: Vec<i64> = sqlx::query_scalar("SELECT record_offset FROM dead_letter_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, vec![2], "the recent one is kept");
    pool.close().await;
    drop_database(&database).await;
}

async fn bulk_retry(api: &Api, token: &str, query: &str) -> (u16, Value) {
    api.call(
        reqwest::Method::POST,
        &format!("/v1/logs/retry?{query}"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_retry_resends_a_searchs_failed_logs_in_received_order() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    // Staging: a failed attempt is retried once, then the log is failed and the next goes.
    let Sender {
        destination, token, ..
    } = api
        .sender("Bulk Retry Clinic", "staging", &receiver.url("d"), "Results")
        .await;
    let destination_id = destination["id"].as_str().unwrap().to_string();
    let other_organization = api.create_organization("Elsewhere").await;
    let other_token = api
        .token(&api.create_source(&other_organization, "staging").await)
        .await;

    receiver.respond_with(500, "down");
    let mut log_ids = Vec::new();
    for sequence in 0..5 {
        let (status, response) = api.send(&token, &message("Results", sequence)).await;
        assert_eq!(status, 200, "{response}");
        log_ids.push(response["Meta"]["Logs"][0]["ID"].as_str().unwrap().to_string());
    }
    let failed_query = format!("destination_id={destination_id}&status=failed");
    carrier_testkit::eventually(Duration::from_secs(60), "five failed logs", || async {
        let ids = all_pages(api, &token, &failed_query, 50).await;
        (ids.len() == 5).then_some(())
    })
    .await;
    // The search finds them newest first.
    let mut newest_first_ids = log_ids.clone();
    newest_first_ids.reverse();
    assert_eq!(all_pages(api, &token, &failed_query, 2).await, newest_first_ids);

    // Another organization's bulk retry does not touch them; queued logs are refused.
    let (status, body) = bulk_retry(api, &other_token, "").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["retried"], 0);
    let answer = api
        .request(
            reqwest::Method::POST,
            "/v1/logs/retry?status=queued",
            Some(&token),
            &[],
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer
        .error_text()
        .starts_with("Query parameter status=queued cannot be retried in bulk"));

    // The receiver is fixed; every failed log is retried, two per request, oldest first.
    let before = receiver.received().len();
    receiver.respond_with(200, r#"{"Meta":{"Errors":[]}}"#);
    let mut retried = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("destination_id={destination_id}&limit=2");
        if let Some(cursor) = &cursor {
            query.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = bulk_retry(api, &token, &query).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["not_retried"], serde_json::json!([]));
        let ids: Vec<String> = body["log_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_string())
            .collect();
        assert_eq!(body["retried"], ids.len());
        retried.extend(ids);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(retried, log_ids, "every failed log, oldest first");

    for log_id in &log_ids {
        carrier_testkit::eventually(Duration::from_secs(30), "the retried log delivered", || async {
            let (status, log) = api.log(&token, log_id).await;
            (status == 200 && log["status"] == "delivered").then_some(())
        })
        .await;
    }
    let after: Vec<u64> = sequences(&receiver.received()[before..], None);
    assert_eq!(
        after,
        vec![0, 1, 2, 3, 4],
        "delivered once each, in received order"
    );
    let requests = receiver.received();
    for (request, log_id) in requests[before..].iter().zip(&log_ids) {
        assert_eq!(request.header("webhook-id"), log_id, "the same log, retried");
        assert_eq!(
            request.header("carrier-attempt"),
            "3",
            "after two failed attempts"
        );
    }
    stack.stop().await;
}
