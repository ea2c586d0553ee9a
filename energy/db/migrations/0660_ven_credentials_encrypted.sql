-- 0660 per-utility VEN credentials encrypted at rest (expand only; decision 0860).
-- The code writes only this column (AES-256-GCM under ENERGY_DR__CREDENTIALS_KEY) and empties the
-- plaintext utilities.ven_credentials; rows written before are re-encrypted by
-- `energy utility reencrypt-credentials` (and read as plaintext, with a warning, until then).
ALTER TABLE utilities ADD COLUMN IF NOT EXISTS ven_credentials_encrypted text
    CHECK (ven_credentials_encrypted IS NULL OR ven_credentials_encrypted ~ '^v1\.[0-9a-f]{8}\.[A-Za-z0-9_=-]+$');
