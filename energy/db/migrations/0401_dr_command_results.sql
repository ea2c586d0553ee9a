-- 0401 DR: BMS command results are applied to the saga in batches (expand only).
-- A result (acknowledged or failed) with saga_applied_at NULL has not yet been folded into its saga.
ALTER TABLE bms_commands ADD COLUMN IF NOT EXISTS saga_applied_at timestamptz;
CREATE INDEX IF NOT EXISTS bms_commands_unapplied_idx ON bms_commands (dr_event_id)
    WHERE saga_applied_at IS NULL AND status IN ('acknowledged', 'failed');
