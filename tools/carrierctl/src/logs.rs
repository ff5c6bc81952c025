//! `carrierctl logs get|search|retry`: the logs REST API (`/v1/logs`).
//!
//! `search --all` and a bulk `retry` follow `next_cursor` until Carrier says there is no more,
//! so one command covers every matching log whatever the page size.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{Client, CtlError};
use crate::cli::{LogFilter, LogsCommand};
use crate::output::{self, cell, fields, Table};

pub async fn run(client: &Client, command: LogsCommand, as_json: bool) -> Result<ExitCode, CtlError> {
    match command {
        LogsCommand::Get { log_id } => get(client, &log_id, as_json).await,
        LogsCommand::Search {
            filter,
            limit,
            cursor,
            all,
        } => search(client, &filter, limit, cursor, all, as_json).await,
        LogsCommand::Retry {
            log_id: Some(log_id),
            filter,
            limit,
        } => {
            if !filter.is_empty() || limit.is_some() {
                return Err(CtlError::Usage(
                    "logs retry takes a log ID or filters, not both".into(),
                ));
            }
            retry_one(client, &log_id, as_json).await
        }
        LogsCommand::Retry {
            log_id: None,
            filter,
            limit,
        } => retry_matching(client, &filter, limit, as_json).await,
    }
}

async fn get(client: &Client, log_id: &str, as_json: bool) -> Result<ExitCode, CtlError> {
    let log = client.call(Method::GET, &["v1", "logs", log_id], &[]).await?;
    if as_json {
        output::json(&log);
        return Ok(ExitCode::SUCCESS);
    }
    output::line(&fields(&[
        ("Log", cell(&log["id"])),
        ("Status", cell(&log["status"])),
        ("Message", cell(&log["message_id"])),
        ("Destination", cell(&log["destination_id"])),
        ("Source", cell(&log["source_id"])),
        ("Organization", cell(&log["organization_id"])),
        ("Data model", cell(&log["data_model"])),
        ("Event type", cell(&log["event_type"])),
        ("Environment", cell(&log["environment"])),
        ("Test", cell(&log["test"])),
        ("Received", cell(&log["received_at"])),
        ("Updated", cell(&log["updated_at"])),
        ("Attempts", cell(&log["attempt_count"])),
    ]));
    let attempts = log["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        let mut table = Table::new(&["#", "STARTED", "MS", "OUTCOME", "HTTP", "ERROR"]);
        for attempt in &attempts {
            table.row(vec![
                cell(&attempt["number"]),
                cell(&attempt["started_at"]),
                cell(&attempt["duration_ms"]),
                cell(&attempt["outcome"]),
                cell(&attempt["status_code"]),
                cell(&attempt["error"]),
            ]);
        }
        output::line("");
        output::line(&table.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn paged_query(filter: &LogFilter, limit: Option<u32>, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = filter.query();
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_string()));
    }
    query
}

/// `next_cursor` of a page; `None` on the last page.
fn next_cursor(page: &Value) -> Option<String> {
    page["next_cursor"].as_str().map(str::to_string)
}

async fn search(
    client: &Client,
    filter: &LogFilter,
    limit: Option<u32>,
    cursor: Option<String>,
    all: bool,
    as_json: bool,
) -> Result<ExitCode, CtlError> {
    let mut logs = Vec::new();
    let mut cursor = cursor;
    loop {
        let page = client
            .call(
                Method::GET,
                &["v1", "logs"],
                &paged_query(filter, limit, cursor.as_deref()),
            )
            .await?;
        logs.extend(page["logs"].as_array().cloned().unwrap_or_default());
        let next = next_cursor(&page);
        if !all || next.is_none() || next == cursor {
            cursor = next;
            break;
        }
        cursor = next;
    }
    if as_json {
        output::json(&json!({ "logs": logs, "next_cursor": cursor }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "LOG",
        "RECEIVED",
        "STATUS",
        "ATTEMPTS",
        "DESTINATION",
        "DATA MODEL",
        "EVENT",
        "TEST",
    ]);
    for log in &logs {
        table.row(vec![
            cell(&log["id"]),
            cell(&log["received_at"]),
            cell(&log["status"]),
            cell(&log["attempt_count"]),
            cell(&log["destination_id"]),
            cell(&log["data_model"]),
            cell(&log["event_type"]),
            cell(&log["test"]),
        ]);
    }
    if !logs.is_empty() {
        output::line(&table.render());
    }
    eprintln!("{} log(s)", logs.len());
    if let Some(cursor) = cursor {
        eprintln!("more: add --cursor {cursor} (or --all)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry_one(client: &Client, log_id: &str, as_json: bool) -> Result<ExitCode, CtlError> {
    let answer = client
        .call(Method::POST, &["v1", "logs", log_id, "retry"], &[])
        .await?;
    if as_json {
        output::json(&answer);
    } else if answer["attempting_now"] == true {
        output::line(&format!(
            "log {log_id} is its destination's held head: attempting it now"
        ));
    } else {
        output::line(&format!(
            "retry of log {log_id} queued behind its destination's waiting messages (retry {})",
            cell(&answer["retry_id"])
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Retries every log the filters match, page after page, oldest first. Exits 1 when some could
/// not be retried (they are listed with Carrier's reason).
async fn retry_matching(
    client: &Client,
    filter: &LogFilter,
    limit: Option<u32>,
    as_json: bool,
) -> Result<ExitCode, CtlError> {
    if filter.is_empty() {
        return Err(CtlError::Usage(
            "logs retry needs a log ID or at least one filter (e.g. --status failed --since 1h)".into(),
        ));
    }
    let mut retried: Vec<Value> = Vec::new();
    let mut not_retried: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .call(
                Method::POST,
                &["v1", "logs", "retry"],
                &paged_query(filter, limit, cursor.as_deref()),
            )
            .await?;
        retried.extend(page["log_ids"].as_array().cloned().unwrap_or_default());
        not_retried.extend(page["not_retried"].as_array().cloned().unwrap_or_default());
        let next = next_cursor(&page);
        if next.is_none() || next == cursor {
            break;
        }
        if !as_json {
            eprintln!("retried {} log(s) so far", retried.len());
        }
        cursor = next;
    }
    // A log a page could not retry because the queue failed is offered again by the next page;
    // if that retry went through, it is no longer "not retried".
    not_retried.retain(|entry| !retried.contains(&entry["log_id"]));
    if as_json {
        output::json(&json!({
            "retried": retried.len(),
            "log_ids": retried,
            "not_retried": not_retried,
        }));
    } else {
        output::line(&format!("retried {} log(s)", retried.len()));
        if !not_retried.is_empty() {
            let mut table = Table::new(&["NOT RETRIED", "WHY"]);
            for entry in &not_retried {
                table.row(vec![cell(&entry["log_id"]), cell(&entry["error"])]);
            }
            output::line(&table.render());
        }
    }
    Ok(if not_retried.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
