-- Log search (GET /v1/logs, POST /v1/logs/retry) and retention (the notifier's purge).
--
-- A search page is a keyset range over (received_at, id) under the caller's filters, newest
-- first (search) or oldest first (bulk retry). Each index below starts with one equality filter
-- and ends with that order, so a page is one index range scan at any depth; the other filters
-- are checked on the rows the scan walks. The indexes are ascending: Postgres scans them
-- backwards for newest-first pages.
--
-- What each serves:
--   logs_by_organization  every search by a source's token (its organization is implied)
--   logs_by_destination   destination_id
--   logs_by_source        source_id
--   logs_by_data_model    data_model
--   logs_unfinished       status queued|failed|cancelled (a small share of all logs; delivered
--                         logs are most of the table and found fast by any of the others)
--   logs_test             test=true (test messages are few)
--   logs_by_received      no equality filter (the operator's plain search, a time range) and
--                         the purge, which deletes from the oldest end
--
-- logs_unfinished and logs_test are partial, so they stay small. The price: a status change
-- (queued → delivered) now touches an index, so the notifier's upsert of a log's final status
-- is no longer a heap-only (HOT) update. README's Performance section has the write throughput
-- measured with this schema.
DROP INDEX logs_by_destination;
DROP INDEX logs_by_organization;

CREATE INDEX logs_by_organization ON logs (organization_id, received_at, id);
CREATE INDEX logs_by_destination ON logs (destination_id, received_at, id);
CREATE INDEX logs_by_source ON logs (source_id, received_at, id);
CREATE INDEX logs_by_data_model ON logs (data_model, received_at, id);
CREATE INDEX logs_unfinished ON logs (status, received_at, id) WHERE status <> 'delivered';
CREATE INDEX logs_test ON logs (received_at, id) WHERE test;
CREATE INDEX logs_by_received ON logs (received_at, id);
