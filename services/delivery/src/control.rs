//! The control service (`carrier.delivery.v1.DeliveryControl`): operators' pause, resume, skip,
//! retry-now and queue state, reached through ingress's REST API.
//!
//! Ingress calls the worker that owns the destination's partition (see `registry`). That worker
//! answers from its live lane and acts at once: it stores the control with the destination
//! through the router (configuration is the router's, and a stored control outlives this worker
//! and any rebalance), puts the router's answer in its settings cache and wakes the lane. Any
//! other worker answers the same request correctly from the stored state; the owner then sees
//! the stored control at its next look (within a second).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use carrier_proto::config_v1::{Destination, SetDestinationPausedRequest, SkipHeadRequest};
use carrier_proto::delivery_v1::delivery_control_server::{DeliveryControl, DeliveryControlServer};
use carrier_proto::delivery_v1::{HeadReply, HeadRequest, QueueRequest, QueueState};
use tonic::{Request, Response, Status};

use crate::destinations::{Destinations, LookupError};
use crate::lanes::LaneDirectory;
use crate::parking::{HeldReason, ParkingStore};

/// Control requests served, by method and outcome (`ok`, or the gRPC code of the failure).
fn count<T>(method: &str, result: &Result<T, Status>) {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    crate::metrics::metrics()
        .control_requests
        .with_label_values(&[method, outcome.as_str()])
        .inc();
}

pub struct ControlService {
    pub worker_id: String,
    pub destinations: Arc<Destinations>,
    pub parking: ParkingStore,
    pub directory: Arc<LaneDirectory>,
    /// Partitions of `carrier.deliveries` (0 until known), kept by the registry.
    pub partition_count: Arc<AtomicI32>,
}

pub fn server(service: ControlService) -> DeliveryControlServer<ControlService> {
    DeliveryControlServer::new(service)
}

fn lookup_status(error: LookupError) -> Status {
    match error {
        LookupError::Gone(id) => Status::not_found(format!("Unknown destination {id}")),
        LookupError::Unavailable(message) => {
            Status::unavailable(format!("destination settings unavailable: {message}"))
        }
    }
}

fn store_status(error: carrier_store::sqlx::Error) -> Status {
    tracing::warn!(%error, "control request: parking store unavailable");
    Status::unavailable("the parking store (Postgres) is unavailable")
}

impl ControlService {
    fn partition_of(&self, destination_id: &str) -> Option<i32> {
        let count = self.partition_count.load(Ordering::Relaxed);
        (count > 0).then(|| carrier_kafka::partitioner::partition_for(destination_id.as_bytes(), count))
    }

    async fn destination(&self, id: &str) -> Result<Arc<Destination>, Status> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(Status::not_found(format!("Unknown destination {id}")));
        }
        self.destinations.fresh(id).await.map_err(lookup_status)
    }

    /// The queue as this worker sees it: live when it owns the destination's partition,
    /// otherwise as stored by whichever worker held it last.
    async fn state(&self, destination: &Destination) -> Result<QueueState, Status> {
        let id = destination.id.as_str();
        let partition = self.partition_of(id);
        let live = partition.and_then(|partition| self.directory.view(partition, id));
        let parked = self.parking.parked_count(id).await.map_err(store_status)?;
        let held = match &live {
            Some(view) => view.held.clone(),
            None => self.parking.held(id).await.map_err(store_status)?,
        };
        let (paused_reason, paused_since_ms) = if destination.paused_by_operator {
            ("operator", destination.paused_at_ms)
        } else {
            match &held {
                Some(head) if head.reason == HeldReason::Failing => ("failing", head.since_ms),
                _ => ("", 0),
            }
        };
        let head = held.unwrap_or_default();
        Ok(QueueState {
            destination_id: id.to_string(),
            paused: !paused_reason.is_empty(),
            paused_reason: paused_reason.to_string(),
            paused_since_ms,
            depth: parked + live.as_ref().map_or(0, |view| view.queued_in_memory as i64),
            head_log_id: head.log_id,
            head_attempts: head.attempts,
            next_attempt_at_ms: head.next_attempt_at_ms.unwrap_or(0),
            last_error: head.last_error,
            partition: partition.unwrap_or(-1),
            owner_worker_id: if live.is_some() {
                self.worker_id.clone()
            } else {
                String::new()
            },
            head_retry_id: head.retry_id,
        })
    }

    /// The router stored a change: act on it here now.
    async fn changed(&self, destination: Destination) -> Result<QueueState, Status> {
        let destination = self.destinations.put(destination);
        if let Some(partition) = self.partition_of(&destination.id) {
            self.directory.wake(partition, &destination.id);
        }
        self.state(&destination).await
    }

    async fn set_paused(&self, request: QueueRequest, paused: bool) -> Result<QueueState, Status> {
        let destination = self.destination(&request.destination_id).await?;
        let stored = self
            .destinations
            .router()
            .set_destination_paused(SetDestinationPausedRequest {
                id: destination.id.clone(),
                paused,
            })
            .await?
            .into_inner();
        tracing::info!(destination_id = %destination.id, paused, "operator changed a destination's pause");
        self.changed(stored).await
    }

    /// The head a skip or retry-now acts on: the one named, which must be the held head. Its log
    /// and the retry ID of its task.
    async fn held_head(&self, request: &HeadRequest) -> Result<(Arc<Destination>, String, String), Status> {
        let destination = self.destination(&request.destination_id).await?;
        let queue = self.state(&destination).await?;
        if queue.head_log_id.is_empty() {
            return Err(Status::failed_precondition(format!(
                "Destination {} has no held message",
                destination.id
            )));
        }
        if !request.log_id.is_empty() && request.log_id != queue.head_log_id {
            return Err(Status::failed_precondition(format!(
                "Log {} is not the held head of destination {} (the head is {})",
                request.log_id, destination.id, queue.head_log_id
            )));
        }
        Ok((destination, queue.head_log_id, queue.head_retry_id))
    }
}

/// What an operator asks of a held head.
#[derive(Debug, Clone, Copy)]
enum HeadAction {
    Skip,
    RetryNow,
}

impl ControlService {
    async fn act_on_head(&self, request: HeadRequest, action: HeadAction) -> Result<HeadReply, Status> {
        let (destination, log_id, retry_id) = self.held_head(&request).await?;
        let request = SkipHeadRequest {
            id: destination.id.clone(),
            log_id: log_id.clone(),
            retry_id,
        };
        let mut router = self.destinations.router();
        let stored = match action {
            HeadAction::Skip => router.skip_head(request).await?,
            HeadAction::RetryNow => router.retry_head_now(request).await?,
        }
        .into_inner();
        tracing::info!(destination_id = %destination.id, %log_id, ?action, "operator acted on a held head");
        Ok(HeadReply {
            log_id,
            queue: Some(self.changed(stored).await?),
        })
    }
}

#[tonic::async_trait]
impl DeliveryControl for ControlService {
    async fn get_queue(&self, request: Request<QueueRequest>) -> Result<Response<QueueState>, Status> {
        let result = async {
            let destination = self.destination(&request.into_inner().destination_id).await?;
            self.state(&destination).await
        }
        .await;
        count("get_queue", &result);
        result.map(Response::new)
    }

    async fn pause(&self, request: Request<QueueRequest>) -> Result<Response<QueueState>, Status> {
        let result = self.set_paused(request.into_inner(), true).await;
        count("pause", &result);
        result.map(Response::new)
    }

    async fn resume(&self, request: Request<QueueRequest>) -> Result<Response<QueueState>, Status> {
        let result = self.set_paused(request.into_inner(), false).await;
        count("resume", &result);
        result.map(Response::new)
    }

    async fn skip(&self, request: Request<HeadRequest>) -> Result<Response<HeadReply>, Status> {
        let result = self.act_on_head(request.into_inner(), HeadAction::Skip).await;
        count("skip", &result);
        result.map(Response::new)
    }

    async fn retry_now(&self, request: Request<HeadRequest>) -> Result<Response<HeadReply>, Status> {
        let result = self.act_on_head(request.into_inner(), HeadAction::RetryNow).await;
        count("retry_now", &result);
        result.map(Response::new)
    }
}
