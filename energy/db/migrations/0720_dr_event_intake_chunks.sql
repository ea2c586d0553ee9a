-- 0720 A DR event's facilities are written in chunks, each in its own transaction (decision 0920):
-- the webhook's transaction stores the event with the facilities still to add; the coordinator
-- adds them chunk by chunk and clears the list before it schedules the event. NULL = complete.
-- Expand only (a new nullable column).
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS intake_facility_ids text[];
