-- 0400 DR saga (expand only): import-capacity asks, cancellation flag, report bookkeeping,
-- dispatch order of BMS commands (criticality tier 4 first).
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS import_limit_kw double precision CHECK (import_limit_kw >= 0);
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS reported_at timestamptz;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS report_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS report_detail jsonb;
ALTER TABLE bms_commands ADD COLUMN IF NOT EXISTS dispatch_order integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS dr_events_unreported_idx ON dr_events (updated_at)
    WHERE reported_at IS NULL AND state IN ('completed', 'partially_failed', 'failed');
CREATE INDEX IF NOT EXISTS bms_commands_failed_idx ON bms_commands (dr_event_id) WHERE status = 'failed';
