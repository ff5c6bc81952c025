-- A partition's stream can be replaced under the same topic name: the topic deleted and created
-- again, or a broker that lost its data. Offsets then start again at 0 and name other records,
-- so a stored offset, and state keyed by offsets (parked tasks), would point into the wrong
-- stream. `generation` counts the streams a partition's lease row has seen. The anchor is one
-- record of the current stream (its offset and a digest of its timestamp, key and payload): the
-- next owner reads that offset again and, if another record is there, knows the stream changed.
-- See crates/kafka/src/consumer/design.md, "Stream generations".
ALTER TABLE partition_leases
    ADD COLUMN generation BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN anchor_offset BIGINT,
    ADD COLUMN anchor_digest BYTEA,
    ADD COLUMN anchored_at TIMESTAMPTZ;

-- A parked task belongs to one generation of its partition's stream. Rows of an older generation
-- come before every task of the current one (they were read from the stream that came first).
ALTER TABLE parked_tasks ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE parked_tasks DROP CONSTRAINT parked_tasks_pkey;
ALTER TABLE parked_tasks ADD PRIMARY KEY (destination_id, generation, task_offset);
