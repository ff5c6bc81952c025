-- Delivery's parking store: the backlog of a held destination, out of worker memory.
-- A task is keyed by its destination and its offset in carrier.deliveries: a destination's tasks
-- all live in one partition, so offset order is the destination's order, whatever order the
-- rows were written in, and a task parked twice (re-read after a crash) is stored once.
CREATE TABLE parked_tasks (
    destination_id UUID NOT NULL,
    task_offset BIGINT NOT NULL,
    partition INTEGER NOT NULL,
    log_id UUID NOT NULL,
    task BYTEA NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, task_offset)
);

CREATE INDEX parked_tasks_by_partition ON parked_tasks (partition, destination_id);
