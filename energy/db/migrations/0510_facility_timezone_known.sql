-- A facility's timezone must be a zone PostgreSQL knows, whoever writes the row (API, seed, SQL by
-- hand), so one bad name can never fail a fleet-wide job later. A trigger, not a CHECK: zone lookup
-- is not immutable. "AT TIME ZONE" raises for a name the server cannot resolve and is cached (a scan
-- of pg_timezone_names per row is ~100 ms); POSIX offsets such as "UTC+3" are refused by the pattern.
-- The API checks the same names against Python's zone database first (schemas.api.TimeZoneName).
-- Rows written before this migration are left as they are: only new writes are checked.
CREATE OR REPLACE FUNCTION facilities_timezone_known() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone !~ '^[A-Za-z][A-Za-z0-9_/-]{0,63}$' THEN
        RAISE EXCEPTION 'unknown time zone: %', NEW.timezone USING ERRCODE = 'check_violation';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE NEW.timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'unknown time zone: %', NEW.timezone USING ERRCODE = 'check_violation';
    END;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS facilities_timezone_known ON facilities;
CREATE TRIGGER facilities_timezone_known
    BEFORE INSERT OR UPDATE OF timezone ON facilities
    FOR EACH ROW EXECUTE FUNCTION facilities_timezone_known();
