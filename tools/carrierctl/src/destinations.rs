//! `carrierctl destinations queue|pause|resume|skip`: operator control of a destination's queue
//! (`/v1/destinations/{id}/queue|pause|resume|skip`, answered by the delivery worker that owns
//! the destination's lane).

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::api::{Client, CtlError};
use crate::cli::DestinationsCommand;
use crate::output::{self, cell, fields};

pub async fn run(client: &Client, command: DestinationsCommand, as_json: bool) -> Result<ExitCode, CtlError> {
    let (destination_id, action) = match &command {
        DestinationsCommand::Queue { destination_id } => (destination_id, None),
        DestinationsCommand::Pause { destination_id } => (destination_id, Some("pause")),
        DestinationsCommand::Resume { destination_id } => (destination_id, Some("resume")),
        DestinationsCommand::Skip { destination_id } => (destination_id, Some("skip")),
    };
    let answer = match action {
        None => {
            client
                .call(Method::GET, &["v1", "destinations", destination_id, "queue"], &[])
                .await?
        }
        Some(action) => {
            client
                .call(Method::POST, &["v1", "destinations", destination_id, action], &[])
                .await?
        }
    };
    if as_json {
        output::json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    match action {
        Some("skip") => output::line(&format!(
            "skipped log {} of destination {destination_id}; the next message proceeds unless an operator pause holds the queue",
            cell(&answer["skipped_log_id"])
        )),
        Some(action) => {
            let done = if action == "pause" { "paused" } else { "resumed" };
            output::line(&format!("{done} destination {destination_id}"));
            output::line(&queue_fields(&answer));
        }
        None => output::line(&queue_fields(&answer)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A queue's state for people.
fn queue_fields(queue: &Value) -> String {
    let state = match (queue["paused"].as_bool(), queue["paused_reason"].as_str()) {
        (Some(true), Some(reason)) => format!("paused ({reason})"),
        (Some(true), None) => "paused".to_string(),
        (Some(false), _) => "flowing".to_string(),
        (None, _) => cell(&queue["paused"]),
    };
    fields(&[
        ("Destination", cell(&queue["destination_id"])),
        ("State", state),
        ("Paused since", cell(&queue["paused_since"])),
        ("Depth", cell(&queue["depth"])),
        ("Head log", cell(&queue["head_log_id"])),
        ("Head attempts", cell(&queue["head_attempts"])),
        ("Next attempt", cell(&queue["next_attempt_at"])),
        ("Last error", cell(&queue["last_error"])),
        ("Partition", cell(&queue["partition"])),
        ("Worker", cell(&queue["owner_worker_id"])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_held_queue_reads_as_paused_with_its_reason() {
        let text = queue_fields(&json!({
            "destination_id": "d1", "paused": true, "paused_reason": "failing",
            "paused_since": "2026-11-26T10:00:00.000Z", "depth": 3, "head_log_id": "l1",
            "head_attempts": 4, "next_attempt_at": null, "last_error": "destination answered HTTP 500",
            "partition": 2, "owner_worker_id": null
        }));
        assert!(text.contains("State          paused (failing)"), "{text}");
        assert!(text.contains("Next attempt   -"), "{text}");
        assert!(
            text.contains("Last error     destination answered HTTP 500"),
            "{text}"
        );
    }
}
