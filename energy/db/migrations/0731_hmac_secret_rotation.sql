-- 0731 rotating the webhook HMAC secret with an overlap window (expand only; decision 0932).
-- `energy utility rotate-hmac-secret` / POST /api/admin/utilities/{id}/hmac-secret move the sealed
-- current secret (utilities.hmac_secret_encrypted, migration 0730) here and seal the new one there;
-- the webhook accepts a signature made with this previous secret while now() < its expiry, and only
-- the current one afterwards. Sealed like the current one (AES-256-GCM, same form, same context).
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS hmac_previous_secret_encrypted text
    CHECK (hmac_previous_secret_encrypted IS NULL
           OR hmac_previous_secret_encrypted ~ '^v1\.[0-9a-f]{8}\.[A-Za-z0-9_=-]+$');
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS hmac_previous_expires_at timestamptz;
