-- Backlog alerts (issue 13 §7): a production destination whose held head is older than a
-- threshold, or whose parked backlog is deeper than one, raises one `backlog` alert and, when it
-- clears, one `backlog_cleared` alert. Thresholds per organization (defaults of its
-- destinations), overridable per destination; NULL inherits (a destination's from its
-- organization, an organization's from the notifier's configuration), 0 turns a criterion off.
-- Additive: older builds ignore the columns and table and never write the new alert kinds.
ALTER TABLE organizations
    ADD COLUMN backlog_alert_after_secs INTEGER CHECK (backlog_alert_after_secs >= 0),
    ADD COLUMN backlog_alert_depth INTEGER CHECK (backlog_alert_depth >= 0);
ALTER TABLE destinations
    ADD COLUMN backlog_alert_after_secs INTEGER CHECK (backlog_alert_after_secs >= 0),
    ADD COLUMN backlog_alert_depth INTEGER CHECK (backlog_alert_depth >= 0);

-- One row per destination with an open backlog incident (its `backlog` alert raised, its
-- `backlog_cleared` alert not yet).
CREATE TABLE destination_backlogs (
    destination_id UUID PRIMARY KEY,
    organization_id UUID NOT NULL,
    incident_id UUID NOT NULL,
    -- Why it opened: 'age' (the held head too old) or 'depth' (too many parked tasks).
    reason TEXT NOT NULL CHECK (reason IN ('age', 'depth')),
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check
    CHECK (kind IN ('failing', 'recovered', 'backlog', 'backlog_cleared'));
