-- The forecast service's backtest decisions (decision 0940): per facility and model version, whether the
-- model or seasonal naive is served and the facility's own conformal band offsets, so a restarted service
-- reuses them instead of backtesting every facility again. A new model version gets new rows; rows older
-- than the decisions' lifetime (a week) are deleted by the service.
CREATE TABLE IF NOT EXISTS forecast_gates (
    facility_id    TEXT NOT NULL REFERENCES facilities (facility_id) ON DELETE CASCADE,
    model_version  TEXT NOT NULL,
    use_model      BOOLEAN NOT NULL,
    model_mape_pct DOUBLE PRECISION,
    naive_mape_pct DOUBLE PRECISION,
    windows        INTEGER NOT NULL CHECK (windows >= 0),
    low_offset     DOUBLE PRECISION[],
    high_offset    DOUBLE PRECISION[],
    decided_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (facility_id, model_version),
    CHECK ((low_offset IS NULL) = (high_offset IS NULL))
);
CREATE INDEX IF NOT EXISTS forecast_gates_decided_at ON forecast_gates (decided_at);
