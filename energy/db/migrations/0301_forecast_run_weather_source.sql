-- 0301 forecast: which weather source a run used (primary, secondary, cache, persistence, none).
-- Expand-only: a nullable column; older writers leave it NULL.
ALTER TABLE forecast_runs ADD COLUMN weather_source text
    CHECK (weather_source IS NULL OR weather_source IN ('primary', 'secondary', 'cache', 'persistence', 'none'));
