-- Live delivery workers and the partitions of carrier.deliveries each owns, so ingress can send
-- an operator's control request to the worker that holds a destination's lane. Each worker
-- refreshes its row every few seconds and deletes it at a clean shutdown; readers ignore rows
-- whose heartbeat is old (a crashed worker), and workers delete rows stale for an hour.
CREATE TABLE delivery_workers (
    worker_id TEXT PRIMARY KEY,
    control_url TEXT NOT NULL,
    partitions INTEGER[] NOT NULL DEFAULT '{}',
    -- Partitions of carrier.deliveries, so a reader can compute a destination's partition.
    partition_count INTEGER NOT NULL DEFAULT 0,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
