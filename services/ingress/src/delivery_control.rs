//! Operator requests to the delivery workers' control service (`carrier.delivery.v1`).
//!
//! A request goes to the worker that owns the destination's partition of `carrier.deliveries`,
//! found in the `delivery_workers` registry (each worker lists the partitions it owns; the
//! partition of a destination is computed with the producers' own key hashing). That worker
//! answers from its live lane and acts at once. When it cannot be reached (it just died, or a
//! rebalance is under way), another live worker answers from the stored state; controls are
//! stored with the destination, so the owner obeys them when it looks next.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use carrier_internal_auth::{AuthenticatedChannel, InternalAuth};
use carrier_proto::delivery_v1::delivery_control_client::DeliveryControlClient;
use carrier_proto::delivery_v1::{QueueRequest, QueueState};
use carrier_proto::ErrorKind;
use carrier_store::sqlx::{self, PgPool, Row};
use tracing::Instrument;

use crate::error::ApiError;

/// How many workers a request tries before it gives up.
const MAX_TRIES: usize = 3;

/// Clients of the workers' control services, by URL (channels are reused). Every call carries
/// the internal service token.
pub struct DeliveryControl {
    internal_auth: InternalAuth,
    channels: Mutex<HashMap<String, AuthenticatedChannel>>,
}

struct Worker {
    id: String,
    url: String,
}

impl DeliveryControl {
    pub fn new(internal_auth: InternalAuth) -> Self {
        Self {
            internal_auth,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, url: &str) -> Result<DeliveryControlClient<AuthenticatedChannel>, ApiError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(url) {
            return Ok(DeliveryControlClient::new(channel.clone()));
        }
        let channel = self
            .internal_auth
            .channel(url, Duration::from_secs(2), Duration::from_secs(10))
            .map_err(|_| ApiError::internal(format!("A delivery worker registered a bad URL: {url}")))?;
        if channels.len() > 1_000 {
            channels.clear();
        }
        channels.insert(url.to_string(), channel.clone());
        Ok(DeliveryControlClient::new(channel))
    }

    /// Live workers, the owner of `destination_id`'s partition first.
    async fn workers(pool: &PgPool, destination_id: &str) -> Result<Vec<Worker>, ApiError> {
        let rows = sqlx::query(
            "SELECT worker_id, control_url, partitions, partition_count FROM delivery_workers
             WHERE heartbeat_at > now() - make_interval(secs => $1)
             ORDER BY heartbeat_at DESC",
        )
        .bind(carrier_store::LIVE_WORKER_SECS as f64)
        .fetch_all(pool)
        .await?;
        let mut workers: Vec<(bool, Worker)> = rows
            .iter()
            .map(|row| {
                let count: i32 = row.get("partition_count");
                let partitions: Vec<i32> = row.get("partitions");
                let owns = count > 0
                    && partitions.contains(&carrier_kafka::partitioner::partition_for(
                        destination_id.as_bytes(),
                        count,
                    ));
                (
                    owns,
                    Worker {
                        id: row.get("worker_id"),
                        url: row.get("control_url"),
                    },
                )
            })
            .collect();
        // Stable: among owners (a rebalance may briefly list two) and others, freshest first.
        workers.sort_by_key(|(owns, _)| !owns);
        Ok(workers.into_iter().map(|(_, worker)| worker).collect())
    }

    /// Sends `call` (gRPC method `method` of `DeliveryControl`, the name of its CLIENT span) to
    /// the owner of the destination, or to another worker if it cannot be reached. Every control
    /// request is safe to repeat.
    pub async fn call<R, F, Fut>(
        &self,
        pool: &PgPool,
        destination_id: &str,
        method: &'static str,
        call: F,
    ) -> Result<R, ApiError>
    where
        F: Fn(DeliveryControlClient<AuthenticatedChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let workers = Self::workers(pool, destination_id).await?;
        if workers.is_empty() {
            return Err(ApiError::new(
                ErrorKind::Overloaded,
                "No delivery worker is running; queue control needs one. Try again when delivery is up",
            ));
        }
        let mut last = None;
        for worker in workers.iter().take(MAX_TRIES) {
            let span =
                carrier_telemetry::trace::grpc_client_span("carrier.delivery.v1.DeliveryControl", method);
            let answer = call(self.client(&worker.url)?).instrument(span.clone()).await;
            let code = answer.as_ref().map_or_else(|status| status.code() as i32, |_| 0);
            carrier_telemetry::trace::record_grpc_status(&span, code);
            match answer {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tracing::warn!(worker_id = %worker.id, url = %worker.url, error = %status.message(), "delivery worker could not serve a control request; trying another");
                    last = Some(status);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(last.map(ApiError::from).unwrap_or_else(|| {
            ApiError::new(
                ErrorKind::QueueRejected,
                "No delivery worker could be reached; try again shortly",
            )
        }))
    }

    /// A destination's queue state, from the delivery worker that owns it (`GET
    /// /v1/destinations/{id}/queue` answers it; a manual retry asks whether its log is the held
    /// head).
    pub async fn queue_state(&self, pool: &PgPool, destination_id: &str) -> Result<QueueState, ApiError> {
        self.call(pool, destination_id, "GetQueue", |mut client| async move {
            client
                .get_queue(QueueRequest {
                    destination_id: destination_id.to_string(),
                })
                .await
        })
        .await
    }
}
