-- The simulated history `energy seed` wrote per facility (decision 0820): its span and interval.
-- A facility with a row is never seeded again, so a second seed changes nothing, and every
-- facility seeded later ends its history where the first seed ended the fleet's.
CREATE TABLE IF NOT EXISTS fleet_history (
    facility_id TEXT PRIMARY KEY REFERENCES facilities (facility_id) ON DELETE CASCADE,
    start_at    TIMESTAMPTZ NOT NULL,
    end_at      TIMESTAMPTZ NOT NULL CHECK (end_at > start_at),
    interval_s  INTEGER NOT NULL CHECK (interval_s > 0),
    readings    BIGINT NOT NULL CHECK (readings >= 0),
    seeded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
