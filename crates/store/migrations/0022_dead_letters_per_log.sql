-- One inbound record holds the creation of several logs (one per route; the notifier makes them
-- from carrier.inbound), so a record's refused events are set aside one row per log: the key
-- gains the log ID. Additive: an older build's `ON CONFLICT DO NOTHING` works with either key.
ALTER TABLE dead_letter_events DROP CONSTRAINT dead_letter_events_pkey;
ALTER TABLE dead_letter_events ADD PRIMARY KEY (topic, partition, record_offset, log_id);
