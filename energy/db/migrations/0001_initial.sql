-- 0001 initial schema: registry, DR saga, BMS commands, outbox/inbox, forecasts, access control.
-- Identifiers follow schemas.readings.ID_PATTERN.

CREATE TABLE tenants (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE facilities (
    facility_id       text PRIMARY KEY CHECK (facility_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
    name              text NOT NULL,
    kind              text NOT NULL DEFAULT 'office'
                      CHECK (kind IN ('office', 'hospital', 'data_centre', 'retail', 'school', 'warehouse')),
    timezone          text NOT NULL,
    latitude          double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude         double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    criticality_tier  smallint NOT NULL DEFAULT 3 CHECK (criticality_tier BETWEEN 1 AND 4),
    peak_kw           double precision CHECK (peak_kw > 0),
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX facilities_tenant_idx ON facilities (tenant_id);
COMMENT ON COLUMN facilities.criticality_tier IS '1 = life safety (hospital) ... 4 = discretionary; DR dispatch goes from 4 to 1';

CREATE TABLE meters (
    meter_id           text PRIMARY KEY CHECK (meter_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    facility_id        text NOT NULL REFERENCES facilities (facility_id),
    meter_type         text NOT NULL DEFAULT 'main' CHECK (meter_type IN ('main', 'submeter', 'hvac', 'lighting', 'plug')),
    rated_kw           double precision NOT NULL CHECK (rated_kw > 0),
    nominal_voltage_v  double precision NOT NULL DEFAULT 230 CHECK (nominal_voltage_v > 0),
    api_key_hash       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);
CREATE INDEX meters_facility_idx ON meters (facility_id) WHERE deleted_at IS NULL;

CREATE TABLE bms_endpoints (
    facility_id  text PRIMARY KEY REFERENCES facilities (facility_id),
    url          text NOT NULL CHECK (url ~ '^https?://'),
    username     text,
    secret_ref   text,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bms_zones (
    facility_id          text NOT NULL REFERENCES facilities (facility_id),
    zone_id              text NOT NULL CHECK (zone_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    kind                 text NOT NULL CHECK (kind IN ('hvac', 'lighting')),
    name                 text NOT NULL,
    rated_kw             double precision NOT NULL CHECK (rated_kw >= 0),
    normal_setpoint_c    double precision,
    max_setpoint_c       double precision,
    min_lighting_pct     double precision CHECK (min_lighting_pct BETWEEN 0 AND 100),
    shed_priority        smallint NOT NULL DEFAULT 5,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, zone_id),
    CHECK (kind <> 'hvac' OR (normal_setpoint_c IS NOT NULL AND max_setpoint_c >= normal_setpoint_c))
);

CREATE TABLE utilities (
    utility_id         text PRIMARY KEY CHECK (utility_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name               text NOT NULL,
    vtn_base_url       text CHECK (vtn_base_url ~ '^https?://'),
    bearer_token_hash  text NOT NULL,
    hmac_secret        text NOT NULL,
    ven_name           text NOT NULL DEFAULT 'energy-platform',
    baseline_method    text NOT NULL DEFAULT 'caiso_10in10' CHECK (baseline_method IN ('forecast', 'caiso_10in10', 'pjm_high4of5')),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE facility_enrollments (
    utility_id   text NOT NULL REFERENCES utilities (utility_id),
    facility_id  text NOT NULL REFERENCES facilities (facility_id),
    program_id   text NOT NULL DEFAULT 'default',
    enrolled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (utility_id, facility_id, program_id)
);

CREATE TABLE dr_events (
    dr_event_id       uuid PRIMARY KEY,
    utility_id        text NOT NULL REFERENCES utilities (utility_id),
    utility_event_id  text NOT NULL,
    program_id        text,
    state             text NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL CHECK (end_at > start_at),
    target_kw         double precision CHECK (target_kw >= 0),
    level             integer,
    priority          integer NOT NULL DEFAULT 0,
    strategy          text,
    source_payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    trace_id          text,
    version           integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (utility_id, utility_event_id)
);
CREATE INDEX dr_events_open_idx ON dr_events (state, start_at)
    WHERE state NOT IN ('completed', 'partially_failed', 'failed', 'cancelled');

CREATE TABLE dr_event_facilities (
    dr_event_id   uuid NOT NULL REFERENCES dr_events (dr_event_id),
    facility_id   text NOT NULL REFERENCES facilities (facility_id),
    state         text NOT NULL,
    target_kw     double precision,
    baseline_kw   double precision,
    achieved_kw   double precision,
    strategy      text,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
    version       integer NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dr_event_id, facility_id)
);
CREATE INDEX dr_event_facilities_facility_idx ON dr_event_facilities (facility_id);

-- Append-only: every transition of an event or one of its facilities.
CREATE TABLE dr_event_log (
    seq          bigserial PRIMARY KEY,
    dr_event_id  uuid NOT NULL REFERENCES dr_events (dr_event_id),
    facility_id  text,
    entry_type   text NOT NULL,
    from_state   text,
    to_state     text,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    trace_id     text,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dr_event_log_event_idx ON dr_event_log (dr_event_id, seq);

CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER dr_event_log_append_only BEFORE UPDATE OR DELETE ON dr_event_log
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

CREATE TABLE bms_commands (
    command_id       uuid PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    dr_event_id      uuid REFERENCES dr_events (dr_event_id),
    facility_id      text NOT NULL REFERENCES facilities (facility_id),
    zone_id          text NOT NULL,
    action           text NOT NULL CHECK (action IN ('set_setpoint', 'set_lighting', 'restore')),
    value            double precision,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'in_flight', 'acknowledged', 'failed', 'superseded')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    not_before       timestamptz NOT NULL DEFAULT now(),
    trace_id         text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz
);
CREATE INDEX bms_commands_due_idx ON bms_commands (not_before) WHERE status IN ('pending', 'in_flight');
CREATE INDEX bms_commands_event_idx ON bms_commands (dr_event_id, facility_id);

-- Transactional outbox: rows written in the same transaction as the state they announce.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    key           text,
    payload       bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Inbox: a (consumer, message) pair seen before is a duplicate and a no-op.
CREATE TABLE inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE forecast_runs (
    facility_id        text NOT NULL REFERENCES facilities (facility_id),
    run_at             timestamptz NOT NULL,
    model_version      text NOT NULL,
    quality            text NOT NULL CHECK (quality IN ('full', 'degraded_no_weather', 'degraded_stale_data')),
    seasonal_naive     boolean NOT NULL DEFAULT false,
    weather_available  boolean NOT NULL,
    sensor_coverage    double precision NOT NULL CHECK (sensor_coverage BETWEEN 0 AND 1),
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, run_at)
);

-- One row per facility and target time: the newest run wins (see forecast.adapters).
CREATE TABLE load_forecasts (
    facility_id        text NOT NULL REFERENCES facilities (facility_id),
    target_ts          timestamptz NOT NULL,
    run_at             timestamptz NOT NULL,
    p10_kw             double precision NOT NULL,
    p50_kw             double precision NOT NULL,
    p90_kw             double precision NOT NULL,
    model_version      text NOT NULL,
    quality            text NOT NULL CHECK (quality IN ('full', 'degraded_no_weather', 'degraded_stale_data')),
    seasonal_naive     boolean NOT NULL DEFAULT false,
    weather_available  boolean NOT NULL,
    sensor_coverage    double precision NOT NULL CHECK (sensor_coverage BETWEEN 0 AND 1),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, target_ts),
    CHECK (p10_kw <= p50_kw AND p50_kw <= p90_kw)
);

CREATE TABLE users (
    user_id        uuid PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (tenant_id),
    email          text NOT NULL UNIQUE,
    role           text NOT NULL CHECK (role IN ('operator', 'analyst', 'facility_manager')),
    password_hash  text NOT NULL,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       uuid PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    name         text NOT NULL,
    key_hash     text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('operator', 'analyst', 'facility_manager')),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A principal (user or API key) sees exactly the facilities listed here.
CREATE TABLE principal_facilities (
    principal_id  uuid NOT NULL,
    facility_id   text NOT NULL REFERENCES facilities (facility_id),
    PRIMARY KEY (principal_id, facility_id)
);
CREATE INDEX principal_facilities_facility_idx ON principal_facilities (facility_id);
