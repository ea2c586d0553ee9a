-- 0430 DR measurement and verification (issue 13, decision 0430/0431). Expand only.

-- Holiday calendar of a facility: ISO 3166-1 country and subdivision (the `holidays` package codes).
-- NULL = no public-holiday calendar (weekends still follow the weekend rules).
ALTER TABLE facilities ADD COLUMN IF NOT EXISTS country text CHECK (country ~ '^[A-Z]{2}$');
ALTER TABLE facilities ADD COLUMN IF NOT EXISTS subdivision text CHECK (subdivision ~ '^[A-Z0-9]{1,3}$');

-- Per-program baseline parameters overriding the published defaults (interval_minutes, adjustment,
-- adjustment_start_h, adjustment_end_h, min_coverage, ...); validated by the coordinator.
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS baseline_rules jsonb NOT NULL DEFAULT '{}'::jsonb;
-- Widen the accepted methods (the running release maps any method it does not know to CAISO).
ALTER TABLE utilities DROP CONSTRAINT IF EXISTS utilities_baseline_method_check;
ALTER TABLE utilities ADD CONSTRAINT utilities_baseline_method_check
    CHECK (baseline_method IN ('forecast', 'caiso_10in10', 'pjm_high4of5', 'regression_towt'));

-- The interval baseline of one facility in one event, frozen in the transaction that starts dispatch.
CREATE TABLE IF NOT EXISTS dr_baselines (
    dr_event_id       uuid NOT NULL REFERENCES dr_events (dr_event_id),
    facility_id       text NOT NULL REFERENCES facilities (facility_id),
    method            text NOT NULL,
    interval_minutes  smallint NOT NULL CHECK (interval_minutes IN (15, 60)),
    timezone          text NOT NULL,
    intervals         jsonb NOT NULL,  -- [{start, end, local_start, kw, unadjusted_kw}]
    detail            jsonb NOT NULL,  -- days used, exclusions and reasons, adjustment, flag, fallback
    frozen_at         timestamptz NOT NULL,
    PRIMARY KEY (dr_event_id, facility_id)
);

-- Settlement runs: versioned, never updated. kind: preliminary | settlement | true_up.
CREATE TABLE IF NOT EXISTS dr_settlement_runs (
    dr_event_id       uuid NOT NULL REFERENCES dr_events (dr_event_id),
    facility_id       text NOT NULL REFERENCES facilities (facility_id),
    version           integer NOT NULL CHECK (version >= 1),
    kind              text NOT NULL CHECK (kind IN ('preliminary', 'settlement', 'true_up')),
    computed_at       timestamptz NOT NULL,
    baseline_method   text NOT NULL,
    baseline_frozen   boolean NOT NULL,
    target_kw         double precision,
    baseline_kwh      double precision,
    metered_kwh       double precision,
    reduction_kwh     double precision,
    mean_reduction_kw double precision,
    performance_pct   double precision,
    coverage_pct      double precision NOT NULL,
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (dr_event_id, facility_id, version)
);
CREATE INDEX IF NOT EXISTS dr_settlement_runs_computed_idx ON dr_settlement_runs (computed_at);

CREATE TABLE IF NOT EXISTS dr_settlement_intervals (
    dr_event_id      uuid NOT NULL,
    facility_id      text NOT NULL,
    version          integer NOT NULL,
    interval_start   timestamptz NOT NULL,
    interval_end     timestamptz NOT NULL,
    local_start      text NOT NULL,  -- ISO 8601 with the facility's UTC offset at that instant
    baseline_kw      double precision,
    metered_kw       double precision,
    reduction_kw     double precision,
    target_kw        double precision,
    performance_pct  double precision,
    coverage_pct     double precision NOT NULL,
    PRIMARY KEY (dr_event_id, facility_id, version, interval_start),
    FOREIGN KEY (dr_event_id, facility_id, version) REFERENCES dr_settlement_runs (dr_event_id, facility_id, version)
);
