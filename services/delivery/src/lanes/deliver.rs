//! One task's attempts until its log is final, and that ending: the final log event, and only
//! once the broker has it, the task let go (offset finished or parked row removed).

use std::sync::Arc;
use std::time::Duration;

use carrier_config::Environment;
use carrier_kafka::consumer;
use carrier_proto::config_v1::Destination;
use carrier_proto::records_v1::{DeliveryTask, LogStatus};

use super::hold::{
    lane_wakeup, sleep_unless_released, sleep_until_retry, wait_or_wakeup, Hold, OPERATOR_PAUSE_RECHECK,
};
use super::metrics::{metrics, InFlight};
use super::parker::{abandon_parked, drop_prefetched, enter_parked_mode};
use super::partition::{complete, finished_key, Origin, PartitionState, Queued};
use super::Shared;
use crate::attempt::{self, AttemptResult};
use crate::destinations::LookupError;
use crate::parking::{HeldHead, HeldReason, Position};
use crate::retry::Decision;
use tracing::Instrument as _;

/// Attempts one task until its log is final (or the partition is released, in which case the
/// task stays unfinished and whoever owns the partition next delivers it).
///
/// `resume_held`: the task is the first one a lane takes from a parked backlog, so it may be a
/// head that an earlier owner of the partition was retrying (before a crash or a rebalance).
/// Its attempt numbers, last error and next attempt time then continue from what that owner
/// stored, instead of starting over (a crash loop must not reset the backoff).
pub(super) async fn deliver(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    mut queued: Queued,
    resume_held: bool,
) -> Option<Ended> {
    let destination_id = queued.task.destination_id.clone();
    // What operators see of this head while it holds the queue.
    let mut hold = Hold::new(&destination_id);
    match attempt_until_final(shared, partition, &mut queued, &mut hold, resume_held).await {
        Outcome::Released => None,
        Outcome::Final {
            environment,
            ending,
            attempts,
            activity,
        } => {
            let parked_at = (queued.origin == Origin::Parked).then_some(queued.position);
            finish(shared, partition, queued, environment, ending, activity).await;
            hold.release(shared, partition).await;
            Some(Ended {
                parked_at,
                first_try: attempts <= 1,
            })
        }
    }
}

/// A task whose log is final, as its lane needs to know it.
pub(super) struct Ended {
    /// Its position, when it was parked (it is then past the lane's parked cursor).
    pub(super) parked_at: Option<Position>,
    /// It needed at most one attempt here: the destination is flowing.
    pub(super) first_try: bool,
}

/// How the attempts of one task ended.
enum Outcome {
    /// The log is final: its event is written (under `activity`) and the task let go.
    Final {
        environment: String,
        ending: Ending,
        /// Attempts made here (not counting an earlier owner's).
        attempts: u32,
        activity: consumer::ActivityGuard,
    },
    /// The partition was released first: the task stays unfinished for the next owner.
    Released,
}

/// Attempts `queued` until its log is final or the partition is released.
async fn attempt_until_final(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    queued: &mut Queued,
    hold: &mut Hold,
    resume_held: bool,
) -> Outcome {
    let tracker = &partition.tracker;
    let released = tracker.released_token().clone();
    let destination_id = queued.task.destination_id.clone();
    let wakeup = lane_wakeup(partition, &destination_id);
    // A manual retry numbers its attempts after the log's earlier ones; the retry rules count
    // from its own first attempt.
    let previous_attempts = queued.task.previous_attempts;
    let mut number: u32 = previous_attempts + 1;
    // Attempts made here, and whether a pause has parked the backlog yet.
    let mut attempts: u32 = 0;
    let mut parked_for_pause = false;
    if resume_held {
        if let Some(stored) = stored_head(shared, &queued.task).await {
            number = number.max(stored.attempts + 1);
            tracing::info!(
                destination_id,
                log_id = %stored.log_id,
                attempts = stored.attempts,
                "resuming a held head where the partition's previous owner left it"
            );
            let wait_ms = stored
                .next_attempt_at_ms
                .map_or(0, |at| at - chrono::Utc::now().timestamp_millis());
            hold.resume(partition, stored);
            if wait_ms > 0
                && !sleep_until_retry(
                    shared,
                    &released,
                    &wakeup,
                    Duration::from_millis(wait_ms as u64),
                    &queued.task,
                    hold.last_attempt_ms,
                )
                .await
            {
                return Outcome::Released;
            }
        }
    }
    loop {
        // Held across the attempt and its event: a revoke waits for it, so no request of this
        // partition is still in flight once another worker may own it.
        let activity = tracker.activity();
        if released.is_cancelled() {
            return Outcome::Released;
        }
        let task = &queued.task;
        let destination = match shared.destinations.get(&task.destination_id).await {
            Ok(destination) => destination,
            Err(LookupError::Unavailable(error)) => {
                tracing::warn!(%error, destination_id = %task.destination_id, "destination settings unavailable, waiting");
                drop(activity);
                if sleep_unless_released(&released, Duration::from_secs(1)).await {
                    continue;
                }
                return Outcome::Released;
            }
            Err(LookupError::Gone(id)) => {
                tracing::warn!(destination_id = %id, log_id = %task.log_id, "destination no longer exists; log cancelled");
                let result = AttemptResult::not_sent(format!("destination {id} no longer exists"));
                let ending = Ending::Attempted {
                    number,
                    result,
                    status: LogStatus::Cancelled,
                };
                return Outcome::Final {
                    environment: String::new(),
                    ending,
                    attempts,
                    activity,
                };
            }
        };
        if skip_requested(&destination, task) {
            tracing::info!(destination_id = %task.destination_id, log_id = %task.log_id, "head skipped by an operator; log cancelled");
            return Outcome::Final {
                environment: destination.environment.clone(),
                ending: Ending::Skipped { sequence: number },
                attempts,
                activity,
            };
        }
        let retry_now = retry_requested(&destination, &queued.task, hold.last_attempt_ms);
        if destination.paused_by_operator && !retry_now {
            drop(activity);
            if !parked_for_pause {
                // Tried again at every look until the parking store takes it (Postgres may be
                // down when the pause arrives).
                parked_for_pause = enter_parked_mode(shared, partition, queued).await;
                if parked_for_pause {
                    tracing::info!(destination_id = %queued.task.destination_id, "destination paused by an operator");
                    drop_prefetched(partition, queued);
                }
            }
            hold.record(
                shared,
                partition,
                HeldReason::Operator,
                &queued.task,
                number - 1,
                None,
            )
            .await;
            if wait_or_wakeup(&released, &wakeup, OPERATOR_PAUSE_RECHECK).await {
                continue;
            }
            return Outcome::Released;
        }
        parked_for_pause = parked_for_pause && destination.paused_by_operator;
        // The lease's own deadline, checked here too: after a freeze this task may run before
        // the watchdog that would have cancelled `released`.
        if tracker.is_released() {
            return Outcome::Released;
        }
        hold.last_attempt_ms = chrono::Utc::now().timestamp_millis();
        attempts += 1;
        let attempt_span =
            crate::spans::attempt_span(task, &queued.trace, number, shared.trace_continue_within);
        queued.trace.last_attempt = Some(carrier_telemetry::trace::context_of(&attempt_span));
        let task = &queued.task;
        let send = async {
            let _in_flight = InFlight::start();
            match stored_body(shared, task).await {
                Ok(stored) => {
                    let body = stored.as_deref().unwrap_or(&task.body);
                    attempt::send(
                        &shared.client,
                        &shared.outbound,
                        &destination,
                        task,
                        body,
                        number,
                        shared.excerpt_bytes,
                    )
                    .await
                }
                Err(error) => AttemptResult::not_sent(error),
            }
        };
        // A lost lease abandons the request even half sent: another worker may own the
        // partition shortly after, and two requests to one destination must never overlap.
        let result = tokio::select! {
            result = send.instrument(attempt_span) => result,
            _ = tracker.lost_token().cancelled() => {
                tracing::warn!(destination_id = %task.destination_id, log_id = %task.log_id, "partition lease lost during an attempt; request abandoned, the next owner sends it again");
                return Outcome::Released;
            }
        };
        let outcome = if result.success { "success" } else { "failure" };
        metrics()
            .attempts
            .with_label_values(&[outcome, result.status_class])
            .inc();
        metrics()
            .attempt_seconds
            .with_label_values(&[outcome])
            .observe(result.duration.as_secs_f64());
        let environment = destination.environment.parse().unwrap_or(Environment::Production);
        let nth_try = number - previous_attempts;
        let decision = if result.unsendable {
            Decision::Final(LogStatus::Failed)
        } else {
            shared.policy.decide(
                environment,
                task.test,
                nth_try,
                result.success,
                rand::random::<f64>(),
            )
        };
        match decision {
            Decision::Final(status) => {
                if status != LogStatus::Delivered {
                    tracing::info!(
                        destination_id = %task.destination_id,
                        log_id = %task.log_id,
                        attempt = number,
                        test = task.test,
                        error = %result.error_summary,
                        "delivery failed; log is final and the destination's next message proceeds"
                    );
                }
                return Outcome::Final {
                    environment: destination.environment.clone(),
                    ending: Ending::Attempted {
                        number,
                        result,
                        status,
                    },
                    attempts,
                    activity,
                };
            }
            Decision::RetryAfter(delay) => {
                tracing::warn!(
                    destination_id = %task.destination_id,
                    log_id = %task.log_id,
                    attempt = number,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %result.error_summary,
                    "delivery attempt failed, will retry"
                );
                if environment == Environment::Production {
                    hold.last_error = result.error_summary.clone();
                    let next_attempt_at_ms = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                    hold.record(
                        shared,
                        partition,
                        HeldReason::Failing,
                        task,
                        number,
                        Some(next_attempt_at_ms),
                    )
                    .await;
                }
                // The attempt's event is written in the background; the log stays queued.
                let events = shared.events.clone();
                let event_task = task.clone();
                let position = queued.task_position(partition);
                let environment = destination.environment.clone();
                let event_span = crate::spans::event_span(events.topic(), task, &queued.trace);
                shared.runtime.spawn(async move {
                    if let Err(error) = events.attempt(&event_task, position, &environment, number, &result, LogStatus::Queued).await {
                        tracing::warn!(%error, log_id = %event_task.log_id, "attempt event could not be written");
                    }
                    drop(activity);
                }.instrument(event_span));
                // Parked whatever its environment: a failing head waiting for its retry must not
                // hold the partition's commits (a staging destination's line of 500 tasks at one
                // retry delay each held them for minutes, and every crash redid that much of its
                // partition's other destinations: the fault matrix's kill-delivery).
                if enter_parked_mode(shared, partition, queued).await {
                    drop_prefetched(partition, queued);
                }
                if !sleep_until_retry(
                    shared,
                    &released,
                    &wakeup,
                    delay,
                    &queued.task,
                    hold.last_attempt_ms,
                )
                .await
                {
                    return Outcome::Released;
                }
                number += 1;
            }
        }
    }
}

/// The head an earlier owner stored for `task`'s destination, if it is this task.
async fn stored_head(shared: &Shared, task: &DeliveryTask) -> Option<HeldHead> {
    match shared.parking.held(&task.destination_id).await {
        Ok(stored) => stored.filter(|head| head.log_id == task.log_id && head.retry_id == task.retry_id),
        Err(error) => {
            // Not fatal: the head is attempted with fresh numbering, as before a crash.
            tracing::warn!(%error, destination_id = %task.destination_id, "cannot read the stored held head; its attempt count starts over");
            None
        }
    }
}

/// Whether a manual retry asked to attempt `task` now, after its attempt that started at
/// `last_attempt_ms`. Markers name a task (log and retry ID), never just a log.
pub(super) fn retry_requested(destination: &Destination, task: &DeliveryTask, last_attempt_ms: i64) -> bool {
    destination.retry_log_id == task.log_id
        && destination.retry_now_retry_id == task.retry_id
        && destination.retry_requested_at_ms > last_attempt_ms
}

/// Whether an operator skipped `task` (its log's original task, or one manual retry of it).
pub(super) fn skip_requested(destination: &Destination, task: &DeliveryTask) -> bool {
    !destination.skip_log_id.is_empty()
        && destination.skip_log_id == task.log_id
        && destination.skip_retry_id == task.retry_id
}

/// How a log became final.
enum Ending {
    /// After attempt `number`, with this status.
    Attempted {
        number: u32,
        result: AttemptResult,
        status: LogStatus,
    },
    /// An operator skipped it (cancelled) before attempt `sequence`.
    Skipped { sequence: u32 },
}

/// The log is final: write its event, and only once the broker has it, let the task go (its
/// offset finished, or its parked row removed). The lane moves on to the next task meanwhile.
///
/// Waits first for room among the partition's unacknowledged events (invariant 5: during a
/// broker outage the lanes stop here rather than piling finished tasks up in memory); the body,
/// which the event does not need, is dropped at once.
async fn finish(
    shared: &Arc<Shared>,
    partition: &Arc<PartitionState>,
    mut queued: Queued,
    environment: String,
    ending: Ending,
    activity: consumer::ActivityGuard,
) {
    let status = match &ending {
        Ending::Attempted { status, .. } => *status,
        Ending::Skipped { .. } => LogStatus::Cancelled,
    };
    metrics().finished.with_label_values(&[status.as_api_str()]).inc();
    partition
        .finished_logs
        .lock()
        .expect("finished logs lock")
        .insert(&queued.task.destination_id, finished_key(&queued.task));
    queued.task.body = Vec::new();
    let permit = partition
        .unacknowledged
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let shared_for_task = shared.clone();
    let partition = partition.clone();
    let event_span = crate::spans::event_span(shared.events.topic(), &queued.task, &queued.trace);
    let position = queued.task_position(&partition);
    shared.runtime.spawn(async move {
        let events = &shared_for_task.events;
        let written = match &ending {
            Ending::Attempted { number, result, status } => {
                events.attempt(&queued.task, position, &environment, *number, result, *status).await
            }
            Ending::Skipped { sequence } => events.skipped(&queued.task, position, &environment, *sequence).await,
        };
        match written {
            Ok(()) => complete(&partition, &queued),
            Err(error) => {
                // The task stays unfinished: after a restart it is attempted again and its
                // event written then. Commits of this partition wait until then.
                tracing::error!(%error, log_id = %queued.task.log_id, offset = queued.position.offset, "final log event could not be written; the partition's commits are held");
                abandon_parked(&partition, &queued);
            }
        }
        drop(activity);
        drop(permit);
    }.instrument(event_span));
}

/// The body of a task whose body was too large for Kafka (`body_stored`), read from Postgres;
/// `None` for an ordinary task (its body is in the record). An error fails the attempt, which is
/// then retried on the usual schedule (Postgres may be back by then).
async fn stored_body(shared: &Shared, task: &DeliveryTask) -> Result<Option<Vec<u8>>, String> {
    if !task.body_stored {
        return Ok(None);
    }
    match carrier_store::bodies::load(shared.parking.pool(), &task.message_id).await {
        Ok(Some(body)) => Ok(Some(body)),
        Ok(None) => {
            tracing::error!(log_id = %task.log_id, message_id = %task.message_id, "stored message body not found (purged past its retention?)");
            Err("the message body is no longer stored (past stored_body_retention_days)".into())
        }
        Err(error) => {
            tracing::warn!(log_id = %task.log_id, %error, "cannot read the stored message body; the attempt fails and is retried");
            Err(format!(
                "the message body could not be read from Postgres: {error}"
            ))
        }
    }
}
