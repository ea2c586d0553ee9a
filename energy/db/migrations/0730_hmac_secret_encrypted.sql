-- 0730 the webhook HMAC secret we verify utilities' signatures with, encrypted at rest (expand only;
-- decision 0930, following 0860). The code writes only this column (AES-256-GCM under
-- ENERGY_DR__CREDENTIALS_KEY, bound to the utility id) and '' into the plaintext utilities.hmac_secret
-- (NOT NULL, kept); rows written before are sealed by `energy utility reencrypt-credentials`
-- (and still verified from the plaintext column, with a warning, until then).
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS hmac_secret_encrypted text
    CHECK (hmac_secret_encrypted IS NULL OR hmac_secret_encrypted ~ '^v1\.[0-9a-f]{8}\.[A-Za-z0-9_=-]+$');
