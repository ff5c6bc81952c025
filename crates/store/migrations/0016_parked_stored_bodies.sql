-- A parked task whose body is stored in `message_bodies` (the task's `body_stored`) names that
-- body here, so the purge of bodies past `stored_body_retention_days` keeps every body a held
-- queue still has to deliver (`NOT EXISTS` on this column, through the partial index below).
-- NULL: the task carries its body itself.
ALTER TABLE parked_tasks ADD COLUMN body_message_id TEXT;

-- Rows parked before this column existed: their message (from the log store, which has every
-- log still queued) when its body is stored.
UPDATE parked_tasks p SET body_message_id = l.message_id::text
  FROM logs l
 WHERE l.id = p.log_id
   AND EXISTS (SELECT 1 FROM message_bodies b WHERE b.message_id = l.message_id::text);

CREATE INDEX parked_tasks_by_stored_body ON parked_tasks (body_message_id)
    WHERE body_message_id IS NOT NULL;
