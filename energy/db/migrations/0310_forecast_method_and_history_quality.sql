-- 0310 forecast: a quality value for forecasts made from too little history, and the method that was
-- served (model, or seasonal naive and why). Expand-only: the CHECKs are widened (every value the
-- previous release writes stays valid) and the new column is nullable (the previous release leaves it NULL).

ALTER TABLE forecast_runs DROP CONSTRAINT IF EXISTS forecast_runs_quality_check;
ALTER TABLE forecast_runs ADD CONSTRAINT forecast_runs_quality_check
    CHECK (quality IN ('full', 'degraded_no_weather', 'degraded_stale_data', 'insufficient_history'));

ALTER TABLE load_forecasts DROP CONSTRAINT IF EXISTS load_forecasts_quality_check;
ALTER TABLE load_forecasts ADD CONSTRAINT load_forecasts_quality_check
    CHECK (quality IN ('full', 'degraded_no_weather', 'degraded_stale_data', 'insufficient_history'));

ALTER TABLE forecast_runs ADD COLUMN IF NOT EXISTS method text
    CHECK (method IS NULL OR method IN ('model', 'seasonal_naive_backtest', 'seasonal_naive_no_model',
                                        'seasonal_naive_sparse_data', 'insufficient_history'));
