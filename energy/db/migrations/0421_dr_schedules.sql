-- Schedules (decision 0421): each interval of an event keeps its own period and asks; the saga
-- records which interval its plans are for and whether a modification awaits a re-plan.
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS intervals jsonb;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS randomize_start_s double precision CHECK (randomize_start_s >= 0);
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS interval_index integer NOT NULL DEFAULT 0;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS replan_due boolean NOT NULL DEFAULT false;
-- Per-zone ordering across events: the worker looks for older unsettled commands of the same zone.
CREATE INDEX IF NOT EXISTS bms_commands_zone_open_idx ON bms_commands (facility_id, zone_id, created_at)
    WHERE status IN ('pending', 'in_flight');
