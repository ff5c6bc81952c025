-- Who owns which partition of a consumed topic. Kafka's group coordinator used to decide this;
-- on Tansu 0.6 a member killed with SIGKILL lingers in the group and keeps its partitions, and
-- during a rebalance a partition can be handed to its next owner before the previous one has
-- let it go. Leases in Postgres decide instead (see crates/kafka/src/consumer/design.md).

-- Live members of a consumer group on one topic; a member refreshes its row every quarter of
-- the lease and deletes it when it stops. A row past `expires_at` is a member that is gone.
CREATE TABLE consumer_members (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    member_id TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, topic, member_id)
);

-- One row per partition ever owned. `owner` may work on the partition until `expires_at`
-- (Postgres' clock); `epoch` grows at every change of owner, so a write that names an old epoch
-- comes from a previous owner and is refused. `committed_offset` is the next offset to read.
CREATE TABLE partition_leases (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    committed_offset BIGINT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
