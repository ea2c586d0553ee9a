-- A platform-level role (decision 0420): acts on every tenant's facilities of a DR event, e.g.
-- cancels a whole multi-tenant event. Expand-only: the role checks are widened, nothing removed.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('operator', 'analyst', 'facility_manager', 'platform_admin'));
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('operator', 'analyst', 'facility_manager', 'platform_admin'));
