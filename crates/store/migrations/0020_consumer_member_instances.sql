-- Issue 12 §6: sticky shares. A consumer's share of partitions is computed from its *instance*
-- (its configured `kafka.instance_id`, e.g. a StatefulSet pod's name, else its member ID), so a
-- process restarted under the same instance gets the same partitions back; the member ID stays
-- unique per process and remains the owner of its leases. Rows of members of an older Carrier
-- have no instance: while one of them is live, every member assigns by the older rule
-- (`p % members`), so a rolling upgrade never leaves a partition wanted by nobody.
ALTER TABLE consumer_members ADD COLUMN instance_id TEXT;
