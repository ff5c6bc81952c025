//! A consumer-group member that commits only finished work. See `design.md` beside this file.
//!
//! - [`coordinator`]: which partitions this member works on — leases in Postgres, renewed,
//!   taken only when free, handed over only after their work drained; offsets are stored there.
//! - [`assignment`]: the share of partitions each live member should own (sticky, balanced,
//!   computed from the members' instances).
//! - [`fetcher`]: the librdkafka thread — polls, hands each record to the
//!   [`PartitionProcessor`] of its partition, pauses partitions with too much unfinished work.
//! - [`doorbells`]: wakes idle partitions their producers wrote to.
//! - [`idle`]: which partitions are left out of fetches while nothing is written to them.
//! - [`instances`]: other live processes claiming this member's instance id.
//! - [`tracker`]: per partition, which offsets are unfinished and what work is in flight.
//! - [`stream`]: where a new owner starts, and whether the partition still holds the stream
//!   its stored offset belongs to (a recreated topic starts a new generation).
//!
//! Processors do the actual work on the tokio runtime and report each finished offset to the
//! partition's [`OffsetTracker`].

mod assignment;
mod coordinator;
mod doorbells;
mod ends;
mod fetcher;
mod idle;
mod instances;
mod metrics;
mod stream;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_store::leases::Leases;
use carrier_store::sqlx::postgres::{PgPool, PgPoolOptions};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

pub use tracker::{ActivityGuard, OffsetTracker};

use crate::client::{self, ClientBuilder, Role};
use ends::Ends;

/// One record, owned, as handed to a processor.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (milliseconds), when the broker has one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The W3C trace context its producer wrote in its headers (empty without one, or when
    /// tracing is off): the parent of the consumer's span.
    pub fn trace_context(&self) -> carrier_telemetry::trace::Context {
        carrier_telemetry::trace::extract_from_pairs(&self.headers)
    }
}

/// Creates the per-partition processors of one consumer.
pub trait Processor: Send + Sync + 'static {
    /// A partition was assigned. The returned processor gets its records in offset order and
    /// lives until the partition is released (after the drain) or its lease is lost. Called on
    /// a blocking thread: it may wait for the partition's own state.
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor>;
}

/// Receives one partition's records, in order, on the consumer thread: it must not block.
/// It starts the work (e.g. spawns a task) and calls [`OffsetTracker::finish`] when the record's
/// work is final; until then the partition's committed offset stays below it.
pub trait PartitionProcessor: Send {
    fn process(&mut self, record: Record);
}

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub topic: String,
    pub group_id: String,
    pub client_id: String,
    /// Past this many unfinished records in one partition, its fetching pauses until half drain.
    pub max_pending_per_partition: usize,
    /// How long a released (or shut down) partition keeps working through the records it already
    /// accepted before it stops starting new work. Finishing them avoids handing the next owner
    /// records whose work was done but not committed (duplicates at a clean rebalance).
    pub handover_timeout: Duration,
    /// Then, how long it waits for work in flight before releasing the partition anyway.
    pub drain_timeout: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
}

/// Starts a consumer: the librdkafka thread and the lease coordinator. Leases live in `pool`'s
/// database (two connections of their own, so a busy service cannot starve its renewals) and
/// last `settings.session_timeout_ms`. It runs until `shutdown` is cancelled, then drains,
/// commits and releases every partition it holds and leaves the group.
pub fn spawn(
    settings: &KafkaSettings,
    options: ConsumerOptions,
    processor: Arc<dyn Processor>,
    pool: &PgPool,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let consumer: BaseConsumer<Ends> =
        client_config(settings, &options).create_with_context(Ends::new(&options.topic))?;
    let lease = Duration::from_millis(settings.session_timeout_ms.max(1000) as u64);

    let lease_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout((lease / 4).max(Duration::from_millis(250)))
        // No ping before each call: under a slow network it would double every renewal's
        // time; a broken connection fails the call, and the next one reconnects.
        .test_before_acquire(false)
        .connect_lazy_with((*pool.connect_options()).clone());
    let member = member_id(&options.client_id);
    // The share is computed from the instance: the configured one, else this process's own.
    let instance = settings.instance().unwrap_or(&member).to_owned();
    tracing::info!(topic = %options.topic, group = %options.group_id, %member, %instance, lease_ms = lease.as_millis() as u64, "joining the consumer group");
    let leases = Leases::new(lease_pool, &options.group_id, &options.topic, &member).with_instance(&instance);
    let idle = idle::IdlePolicy::from_settings(settings);
    let fetcher = Arc::new(fetcher::Fetcher::new(consumer, options, processor, idle));
    if idle.enabled() {
        doorbells::listen(pool.clone(), fetcher.clone(), shutdown.clone());
    }
    let stop = CancellationToken::new();
    let poller = {
        let fetcher = fetcher.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || fetcher.poll_until(stop))
    };
    let reader = crate::admin::RecordReader::new(settings)?;
    let coordinator = coordinator::Coordinator::new(fetcher, reader, leases, lease);
    Ok(tokio::spawn(async move {
        // Also when this task is dropped unfinished (its runtime shutting down, e.g. after a
        // test panicked): the poller thread must end, or the runtime's shutdown waits for it.
        let _stop = stop.clone().drop_guard();
        coordinator.run(shutdown).await;
        stop.cancel();
        let _ = poller.await;
    }))
}

/// The librdkafka consumer of a member.
pub(crate) fn client_config(settings: &KafkaSettings, options: &ConsumerOptions) -> ClientBuilder {
    let mut config = client::builder(settings, Role::Consumer);
    config
        // The group is used only to mirror committed offsets (lag monitoring); partitions are
        // assigned by leases, not by the group coordinator.
        .set("group.id", &options.group_id)
        .set("client.id", &options.client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never jump silently: a position outside the partition (records deleted by retention,
        // or a topic created again) is an error, and the partition is started again from what
        // its lease says (see `stream.rs`).
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("fetch.message.max.bytes", crate::MAX_RECORD_BYTES.to_string())
        // Prefetch is memory the worker holds beyond its own caps: keep it to about one
        // largest record per fetch and a few MiB queued in librdkafka.
        .set(
            "fetch.max.bytes",
            (crate::MAX_RECORD_BYTES + 1024 * 1024).to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            settings.consumer_queue_kbytes.to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("statistics.interval.ms", ends::STATISTICS_INTERVAL_MS.to_string());
    config
}

/// A member ID unique to this process: `<client id>@<host>/<pid>-<random>`. A restarted
/// process is a new member, also under the same `kafka.instance_id`: it owns none of its
/// predecessor's leases (they are released at a clean stop, else they expire on their own).
fn member_id(client_id: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{client_id}@{host}/{}-{}", std::process::id(), &random[..8])
}
