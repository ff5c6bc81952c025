-- Issue 11 §8: incidents, alerts and the queue state carry Carrier's own summary of a failure
-- (status code, connect error, timeout), never the receiver's text, which can quote patient
-- data. Rows written before hold the receiver's text: clear it (the next failure writes the
-- summary). The attempts keep the full text, with the log, for `log_retention_days`.
UPDATE destination_incidents SET last_error = NULL WHERE last_error IS NOT NULL;
UPDATE destination_queues SET last_error = NULL WHERE last_error IS NOT NULL;
