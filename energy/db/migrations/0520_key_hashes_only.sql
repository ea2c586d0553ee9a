-- API keys and meter keys are stored as SHA-256 hex digests only (docs/decisions/0009-secure-defaults.md):
-- a clear-text key cannot be written. NOT VALID: checked for every new or changed row without
-- rescanning the tables (every row written so far came from token_hash).
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_key_hash_is_sha256 CHECK (key_hash ~ '^[0-9a-f]{64}$') NOT VALID;
ALTER TABLE meters
    ADD CONSTRAINT meters_api_key_hash_is_sha256 CHECK (api_key_hash IS NULL OR api_key_hash ~ '^[0-9a-f]{64}$') NOT VALID;
