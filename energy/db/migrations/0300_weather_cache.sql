-- 0300 forecast: weather cache per grid cell (nearby facilities share one provider call).
-- Expand-only: new tables. weather_hourly also serves as the record of past hours used for
-- "persistence" weather (yesterday's values) when every provider is unavailable.

CREATE TABLE weather_fetches (
    cell_id     text PRIMARY KEY,
    provider    text NOT NULL,
    fetched_at  timestamptz NOT NULL,
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL
);

CREATE TABLE weather_hourly (
    cell_id       text NOT NULL,
    ts            timestamptz NOT NULL,
    temp_c        double precision NOT NULL CHECK (temp_c BETWEEN -90 AND 70),
    humidity_pct  double precision CHECK (humidity_pct BETWEEN 0 AND 100),
    cloud_pct     double precision CHECK (cloud_pct BETWEEN 0 AND 100),
    provider      text NOT NULL,
    fetched_at    timestamptz NOT NULL,
    PRIMARY KEY (cell_id, ts)
);
