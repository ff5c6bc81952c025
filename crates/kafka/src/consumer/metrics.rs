//! The consumer's metrics, labelled by topic.

use std::sync::OnceLock;

use carrier_telemetry::prometheus::{IntCounterVec, IntGaugeVec};

pub(crate) struct Metrics {
    /// Partitions this member holds a lease of.
    pub owned: IntGaugeVec,
    /// Live members of the group this member sees.
    pub members: IntGaugeVec,
    /// Other live processes that have claimed this member's instance id for over a lease.
    pub instance_duplicates: IntGaugeVec,
    /// Leases this member lost while working (renewal failed in time, or another member took
    /// the partition): its work in flight was abandoned.
    pub lost: IntCounterVec,
    /// Lease bookkeeping that failed (Postgres unreachable or slow), by step.
    pub errors: IntCounterVec,
    /// Partitions found holding another stream than their stored offset belongs to (a topic
    /// created again): each started a new generation from the beginning.
    pub generations: IntCounterVec,
    /// Partitions whose position fell outside the partition while worked on; each was
    /// started again from its lease.
    pub out_of_range: IntCounterVec,
    /// Records not yet finished per worked partition (see `Fetcher::record_lag`).
    pub lag: IntGaugeVec,
    /// The topic's partition count, as this member last looked it up.
    pub partitions: IntGaugeVec,
    /// Partitions left out of fetches because nothing was written to them lately
    /// (`kafka.idle_after_ms`, `idle.rs`).
    pub idle: IntGaugeVec,
    /// Doorbells heard (`doorbell.rs`), by outcome: `rang` (a producer wrote), `reconnected`
    /// (the listening connection was lost: every partition is fetched again).
    pub doorbells: IntCounterVec,
    /// Fetch requests this member sent, summed over its brokers (librdkafka's statistics, so
    /// counted every `ends::STATISTICS_INTERVAL_MS`): what it costs the broker to read.
    pub fetch_requests: IntCounterVec,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        owned: carrier_telemetry::gauge_vec(
            "carrier_consumer_partitions_owned",
            "Partitions this member holds a lease of",
            &["topic"],
        ),
        members: carrier_telemetry::gauge_vec(
            "carrier_consumer_group_members",
            "Live members of the consumer group seen by this member",
            &["topic"],
        ),
        instance_duplicates: carrier_telemetry::gauge_vec(
            "carrier_consumer_instance_duplicates",
            "Other live processes claiming this member's instance id for longer than a lease",
            &["topic"],
        ),
        lost: carrier_telemetry::counter_vec(
            "carrier_consumer_leases_lost_total",
            "Partition leases lost while working; work in flight was abandoned",
            &["topic"],
        ),
        errors: carrier_telemetry::counter_vec(
            "carrier_consumer_lease_errors_total",
            "Failed lease operations (heartbeat, renew, acquire, commit, release)",
            &["topic", "step"],
        ),
        generations: carrier_telemetry::counter_vec(
            "carrier_consumer_stream_generations_total",
            "Partitions whose stream was replaced (topic recreated); each started a new generation",
            &["topic"],
        ),
        out_of_range: carrier_telemetry::counter_vec(
            "carrier_consumer_out_of_range_total",
            "Partitions whose position fell outside the partition while worked on",
            &["topic"],
        ),
        lag: carrier_telemetry::gauge_vec(
            "carrier_consumer_lag_records",
            "Records of a partition this member works on that are not finished yet (its end minus the committable offset)",
            &["topic", "partition"],
        ),
        partitions: carrier_telemetry::gauge_vec(
            "carrier_consumer_topic_partitions",
            "Partitions of the topic, as this member last looked them up",
            &["topic"],
        ),
        idle: carrier_telemetry::gauge_vec(
            "carrier_consumer_idle_partitions",
            "Partitions this member leaves out of its fetches because nothing was written to them lately (kafka.idle_after_ms)",
            &["topic"],
        ),
        doorbells: carrier_telemetry::counter_vec(
            "carrier_consumer_doorbells_total",
            "Doorbells this member heard: rang (a producer wrote to its partitions) or reconnected (the listening connection was lost)",
            &["topic", "outcome"],
        ),
        fetch_requests: carrier_telemetry::counter_vec(
            "carrier_consumer_fetch_requests_total",
            "Fetch requests this member sent to the brokers (from librdkafka's statistics, every 5 s)",
            &["topic"],
        ),
    })
}
