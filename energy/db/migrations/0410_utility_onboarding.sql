-- 0410 utility onboarding, program enrollments with groups, event identity and tombstones (expand only).
-- Decision records 0411 (onboarding) and 0412 (targeting and event identity).

ALTER TABLE utilities ADD COLUMN IF NOT EXISTS openadr_version text NOT NULL DEFAULT '3.1'
    CHECK (openadr_version IN ('3.0.1', '3.1'));
-- How the platform (the VEN) authenticates to the utility's VTN: a bearer token, or OAuth2 client
-- credentials exchanged at the VTN's token endpoint. Kept retrievable (we must send them); never echoed.
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS ven_auth text NOT NULL DEFAULT 'bearer'
    CHECK (ven_auth IN ('bearer', 'oauth2'));
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS ven_credentials jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS hmac_required boolean NOT NULL DEFAULT false;
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS active boolean NOT NULL DEFAULT true;
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- Webhook bearer tokens we accept from the utility, hashed; rotation keeps the old one until expires_at.
CREATE TABLE IF NOT EXISTS utility_webhook_tokens (
    utility_id   text NOT NULL REFERENCES utilities (utility_id),
    token_hash   text NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    PRIMARY KEY (utility_id, token_hash)
);

-- The utility's programs as the platform knows them, with per-program rules.
CREATE TABLE IF NOT EXISTS utility_programs (
    utility_id          text NOT NULL REFERENCES utilities (utility_id),
    program_id          text NOT NULL CHECK (program_id ~ '^[A-Za-z0-9_-]{1,128}$'),
    program_name        text,
    notice_s            integer CHECK (notice_s >= 0),
    max_duration_s      integer CHECK (max_duration_s > 0),
    dispatch_lead_s     integer CHECK (dispatch_lead_s >= 0),
    max_events_per_day  integer CHECK (max_events_per_day > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (utility_id, program_id)
);

-- Enrollment of a facility (a resource) in a program: the resource name the VTN uses and its groups.
ALTER TABLE facility_enrollments ADD COLUMN IF NOT EXISTS resource_name text;
ALTER TABLE facility_enrollments ADD COLUMN IF NOT EXISTS groups text[] NOT NULL DEFAULT '{}';

CREATE TABLE IF NOT EXISTS utility_audit (
    seq         bigserial PRIMARY KEY,
    utility_id  text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS utility_audit_utility_idx ON utility_audit (utility_id, seq);

-- Event identity across VTN restarts: the VTN's id and creation time, and what targeting resolved.
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS vtn_event_id text;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS vtn_created_at text;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS vtn_modified_at timestamptz;
ALTER TABLE dr_events ADD COLUMN IF NOT EXISTS targeting jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Events seen but not dispatched (nothing targeted resolved) and deletions seen before their creation.
CREATE TABLE IF NOT EXISTS dr_event_intake (
    utility_id        text NOT NULL REFERENCES utilities (utility_id),
    event_key         text NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('not_applicable', 'deleted', 'missed')),
    vtn_modified_at   timestamptz,
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    reported_at       timestamptz,
    PRIMARY KEY (utility_id, event_key)
);
