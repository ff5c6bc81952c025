//! `carrier-bench logs`: the log store at size (issue 5). Needs only Postgres.
//!
//! 1. Write throughput: `CARRIER_BENCH_WRITE_LOGS` logs (100,000) go through the notifier's own
//!    store code (`carrier_notifier::log_store::write`) as the notifier writes them: batches of
//!    500 events, 4 writers at once (one per partition of the development topic), each batch
//!    creating 250 logs (`queued`) and finishing the 250 of its previous batch (`delivered`,
//!    one attempt each). Reported in events/s.
//! 2. The store is filled to `CARRIER_BENCH_LOGS` logs (1,000,000) with SQL: 100 organizations
//!    (one holding a fifth of all logs), 10 destinations and 2 sources each, 20 data models
//!    (skewed), 95 % delivered / 3 % failed / 1 % cancelled / 1 % queued, 2 % test messages,
//!    received over the last 30 days.
//! 3. Search latency through a real ingress (in this process, on the bench database):
//!    `GET /v1/logs` for each kind of filter, walking 10 pages of 50 by cursor, 20 walks each
//!    with varying filter values; p50/p99/max of every page fetched. A source's search is the
//!    operator's with `organization_id` (the same SQL: a source's token adds exactly that).
//!
//! Results go to stdout and `CARRIER_BENCH_OUT` (default `.run/bench/logs.md`). The bench
//! database (`CARRIER_BENCH_DATABASE_URL`, default `.../carrier_bench_logs`) is dropped first.
//! `CARRIER_BENCH_DROP_INDEXES=<name>,...` drops those indexes before writing, to show what they
//! cost the notifier: `logs_by_source,logs_by_data_model,logs_unfinished,logs_test,logs_by_received`
//! (the ones migration 0008 added) gives the store as it was before (the search figures of
//! such a run mean nothing).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use carrier_proto::records_v1::{Attempt, AttemptOutcome, LogEvent, LogStatus};
use carrier_store::sqlx::{self, Connection, PgPool};
use carrier_testkit::client::Api;
use uuid::Uuid;

use crate::{env_number, env_or, percentile};

const BATCH_EVENTS: usize = 500;
const WRITERS: usize = 4;

fn creation(log_id: &str, organization: &str, received_at_ms: i64) -> LogEvent {
    LogEvent {
        log_id: log_id.to_string(),
        message_id: Uuid::now_v7().to_string(),
        destination_id: Uuid::now_v7().to_string(),
        organization_id: organization.to_string(),
        source_id: Uuid::now_v7().to_string(),
        data_model: "Results".into(),
        event_type: "New".into(),
        test: false,
        received_at_ms,
        status: LogStatus::Queued as i32,
        at_ms: received_at_ms,
        environment: "production".into(),
        task_partition: Some(0),
        task_offset: Some(0),
        ..Default::default()
    }
}

fn delivered(created: &LogEvent) -> LogEvent {
    LogEvent {
        status: LogStatus::Delivered as i32,
        attempt: Some(Attempt {
            number: 1,
            started_at_ms: created.received_at_ms + 3,
            duration_ms: 9,
            outcome: AttemptOutcome::Success as i32,
            status_code: 200,
            response_excerpt: r#"{"Meta":{"Errors":[]}}"#.into(),
            ..Default::default()
        }),
        at_ms: created.received_at_ms + 12,
        task_partition: None,
        task_offset: None,
        ..created.clone()
    }
}

/// One writer: `logs` logs, two events each, in batches of [`BATCH_EVENTS`]. Returns the events
/// written.
async fn write_logs(pool: PgPool, logs: usize) -> anyhow::Result<usize> {
    let organization = Uuid::now_v7().to_string();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut unfinished: Vec<LogEvent> = Vec::new();
    let mut created = 0;
    let mut events_written = 0;
    while created < logs || !unfinished.is_empty() {
        let mut batch: Vec<LogEvent> = unfinished.iter().map(delivered).collect();
        unfinished.clear();
        while created < logs && batch.len() < BATCH_EVENTS {
            let event = creation(
                &Uuid::now_v7().to_string(),
                &organization,
                now_ms + created as i64,
            );
            unfinished.push(event.clone());
            batch.push(event);
            created += 1;
        }
        let refs: Vec<&LogEvent> = batch.iter().collect();
        carrier_notifier::log_store::write(
            &pool,
            &refs,
            carrier_notifier::AlertSettings::default().failing_after_attempts as i32,
        )
        .await?;
        events_written += batch.len();
    }
    Ok(events_written)
}

/// Fills the store with generated logs up to `total` (see the module documentation).
async fn fill(pool: &PgPool, total: i64) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM logs")
        .fetch_one(pool)
        .await?;
    let chunk = 100_000i64;
    let mut next = existing;
    while next < total {
        let until = (next + chunk).min(total);
        sqlx::query(
            "INSERT INTO logs (id, message_id, destination_id, organization_id, source_id, data_model,
                               event_type, environment, test, status, status_seq, attempts,
                               received_at, updated_at)
             SELECT gen_random_uuid(), gen_random_uuid(),
                    md5('destination-' || org || '-' || ((i / 7) % 10))::uuid,
                    md5('organization-' || org)::uuid,
                    md5('source-' || org || '-' || ((i / 3) % 2))::uuid,
                    'Model' || floor(power(r1, 3) * 20)::int,
                    'New', 'production', r2 < 0.02,
                    CASE WHEN r3 < 0.95 THEN 'delivered' WHEN r3 < 0.98 THEN 'failed'
                         WHEN r3 < 0.99 THEN 'cancelled' ELSE 'queued' END,
                    1, 1, at, at
             FROM (SELECT i, CASE WHEN i % 5 = 0 THEN 0 ELSE 1 + (i * 7919) % 99 END AS org,
                          random() AS r1, random() AS r2, random() AS r3,
                          now() - random() * interval '30 days' AS at
                   FROM generate_series($1::bigint, $2::bigint - 1) AS i) AS generated",
        )
        .bind(next)
        .bind(until)
        .execute(pool)
        .await?;
        next = until;
        println!("  {next} logs");
    }
    sqlx::raw_sql("VACUUM ANALYZE logs").execute(pool).await?;
    Ok(())
}

/// The IDs the fill query gives organizations, destinations and sources (`md5(...)::uuid`),
/// asked from Postgres.
struct Ids {
    organizations: Vec<String>,
    /// `[organization][0..10]`
    destinations: Vec<Vec<String>>,
    /// `[organization][0..2]`
    sources: Vec<Vec<String>>,
}

impl Ids {
    async fn load(pool: &PgPool) -> anyhow::Result<Ids> {
        let mut ids = Ids {
            organizations: Vec::new(),
            destinations: Vec::new(),
            sources: Vec::new(),
        };
        for organization in 0..100 {
            let (id, destinations, sources): (String, Vec<String>, Vec<String>) = sqlx::query_as(
                "SELECT md5('organization-' || $1)::uuid::text,
                        ARRAY(SELECT md5('destination-' || $1 || '-' || d)::uuid::text FROM generate_series(0, 9) d ORDER BY d),
                        ARRAY(SELECT md5('source-' || $1 || '-' || s)::uuid::text FROM generate_series(0, 1) s ORDER BY s)",
            )
            .bind(organization.to_string())
            .fetch_one(pool)
            .await?;
            ids.organizations.push(id);
            ids.destinations.push(destinations);
            ids.sources.push(sources);
        }
        Ok(ids)
    }
}

struct Case {
    label: &'static str,
    /// The query string of walk `walk` (values vary between walks).
    query: Box<dyn Fn(usize) -> String>,
}

fn small_organization(walk: usize) -> usize {
    1 + (walk * 37) % 99
}

/// A one-day window, a different day for each walk.
fn day(walk: usize) -> String {
    let until = chrono::Utc::now() - chrono::Duration::days((walk % 28) as i64);
    let since = until - chrono::Duration::days(1);
    format!(
        "since={}&until={}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

fn cases(ids: Arc<Ids>) -> Vec<Case> {
    let organization = {
        let ids = ids.clone();
        move |index: usize| ids.organizations[index].clone()
    };
    let destination = {
        let ids = ids.clone();
        move |walk: usize| ids.destinations[small_organization(walk)][walk % 10].clone()
    };
    let source = {
        let ids = ids.clone();
        move |walk: usize| ids.sources[small_organization(walk)][walk % 2].clone()
    };
    vec![
        Case {
            label: "operator, no filter",
            query: Box::new(|_| String::new()),
        },
        Case {
            label: "organization (a source's search), largest: 20 % of logs",
            query: Box::new({
                let organization = organization.clone();
                move |_| format!("organization_id={}", organization(0))
            }),
        },
        Case {
            label: "organization (a source's search), small: 0.8 % of logs",
            query: Box::new({
                let organization = organization.clone();
                move |walk| format!("organization_id={}", organization(small_organization(walk)))
            }),
        },
        Case {
            label: "destination_id",
            query: Box::new({
                let destination = destination.clone();
                move |walk| format!("destination_id={}", destination(walk))
            }),
        },
        Case {
            label: "source_id",
            query: Box::new(move |walk| format!("source_id={}", source(walk))),
        },
        Case {
            label: "status=failed (3 %)",
            query: Box::new(|_| "status=failed".into()),
        },
        Case {
            label: "status=delivered (95 %)",
            query: Box::new(|_| "status=delivered".into()),
        },
        Case {
            label: "data_model, rarest (0.2 %)",
            query: Box::new(|_| "data_model=Model19".into()),
        },
        Case {
            label: "test=true (2 %)",
            query: Box::new(|_| "test=true".into()),
        },
        Case {
            label: "one day (since/until)",
            query: Box::new(day),
        },
        Case {
            label: "largest organization + status=failed (bulk retry's search)",
            query: Box::new({
                let organization = organization.clone();
                move |_| format!("organization_id={}&status=failed", organization(0))
            }),
        },
        Case {
            label: "destination + status=failed + one day",
            query: Box::new(move |walk| {
                format!("destination_id={}&status=failed&{}", destination(walk), day(walk))
            }),
        },
        Case {
            label: "small organization + status=queued + rare data model (few or no matches)",
            query: Box::new(move |walk| {
                format!(
                    "organization_id={}&status=queued&data_model=Model19",
                    organization(small_organization(walk))
                )
            }),
        },
    ]
}

/// Page fetch latencies (ms) of `walks` walks of up to `pages` pages.
async fn measure(
    api: &Api,
    case: &Case,
    walks: usize,
    pages: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut latencies = Vec::new();
    let mut logs_seen = 0;
    for walk in 0..walks {
        let base = (case.query)(walk);
        let mut cursor: Option<String> = None;
        for _ in 0..pages {
            let mut path = format!("/v1/logs?limit=50&{base}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let started = Instant::now();
            let token = api.admin_token.clone();
            let (status, page) = api.call(reqwest::Method::GET, &path, Some(&token), None).await;
            latencies.push(started.elapsed());
            anyhow::ensure!(status == 200, "GET {path} answered {status}: {page}");
            logs_seen += page["logs"].as_array().map(Vec::len).unwrap_or(0);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
    }
    latencies.sort();
    Ok((latencies, logs_seen))
}

pub async fn run(output: &str) -> anyhow::Result<()> {
    let database_url = env_or(
        "CARRIER_BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/carrier_bench_logs",
    );
    let total: i64 = env_number("CARRIER_BENCH_LOGS", 1_000_000);
    let write_logs_count: usize = env_number("CARRIER_BENCH_WRITE_LOGS", 100_000);
    let walks: usize = env_number("CARRIER_BENCH_WALKS", 20);
    let (server, name) = database_url.rsplit_once('/').context("database URL")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    let pool = carrier_store::connect_and_migrate(&database_url, 8, Duration::from_secs(30)).await?;
    let mut report = String::from("# Log store benchmark\n\n");
    // For comparison only: what some indexes cost the writes (search figures of such a run mean
    // nothing). The five 0008 added: the store as it was before 0008.
    let dropped = env_or("CARRIER_BENCH_DROP_INDEXES", "");
    if !dropped.is_empty() {
        sqlx::raw_sql(&format!("DROP INDEX {dropped}"))
            .execute(&pool)
            .await?;
        writeln!(
            report,
            "**Indexes dropped before writing: {dropped}** (CARRIER_BENCH_DROP_INDEXES).\n"
        )?;
    }

    println!("writing {write_logs_count} logs through the notifier's store code ({WRITERS} writers)");
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(tokio::spawn(write_logs(pool.clone(), write_logs_count / WRITERS)));
    }
    let mut events = 0;
    for writer in writers {
        events += writer.await??;
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let write_rate = events as f64 / write_seconds;
    println!("  {events} events in {write_seconds:.1} s: {write_rate:.0} events/s");
    writeln!(
        report,
        "Log-event writes (notifier store code, batches of {BATCH_EVENTS}, {WRITERS} writers, two events per log): \
         {events} events in {write_seconds:.1} s = **{write_rate:.0} events/s** ({:.0} logs/s)\n",
        write_rate / 2.0
    )?;

    println!("filling the store to {total} logs");
    fill(&pool, total).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM logs")
        .fetch_one(&pool)
        .await?;
    let size: String = sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('logs'))")
        .fetch_one(&pool)
        .await?;

    // A real ingress on the bench database; it needs no broker, router or Redis to read logs.
    let listeners = carrier_ingress::Listeners::loopback().await?;
    let url = format!("http://{}", listeners.api.local_addr()?);
    let config = carrier_ingress::Config {
        profile: carrier_config::Profile::Dev,
        database_url: database_url.clone(),
        rate_limit: carrier_ingress::RateLimitSettings {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ingress = tokio::spawn(carrier_ingress::run(config, listeners, shutdown.clone()));
    let api = Api::new(&url, carrier_ingress::DEV_ADMIN_TOKEN);
    for _ in 0..100 {
        if api
            .call(
                reqwest::Method::GET,
                "/v1/logs?limit=1",
                Some(carrier_ingress::DEV_ADMIN_TOKEN),
                None,
            )
            .await
            .0
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    writeln!(
        report,
        "Search (`GET /v1/logs`, limit 50, through ingress) on {stored} logs ({size} with indexes); \
         {walks} walks of up to 10 pages per row, every page timed:\n"
    )?;
    writeln!(report, "| filter | pages | logs | p50 ms | p99 ms | max ms |")?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    let ids = Arc::new(Ids::load(&pool).await?);
    for case in cases(ids).iter() {
        let (latencies, logs) = measure(&api, case, walks, 10).await?;
        let line = format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            case.label,
            latencies.len(),
            logs,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies
                .last()
                .map(|max| max.as_secs_f64() * 1000.0)
                .unwrap_or(f64::NAN),
        );
        println!("{line}");
        writeln!(report, "{line}")?;
    }
    shutdown.cancel();
    let _ = ingress.await;
    if let Some(parent) = std::path::Path::new(output).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(output, &report)?;
    println!("results written to {output}");
    Ok(())
}
