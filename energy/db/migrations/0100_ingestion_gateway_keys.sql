-- 0100 ingestion: API keys of meter gateways for POST /v1/readings (SHA-256 hashes only).
-- Expand-only: a new table. A key with facility_id NULL may post readings of any facility
-- (the local/test dev key); production keys name their facility.
CREATE TABLE IF NOT EXISTS ingestion_gateway_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    key_hash     text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    facility_id  text REFERENCES facilities (facility_id),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
