-- Queries of release 0.1 that every later migration must keep working (expand-contract).
-- One statement per block; blocks are separated by a line holding only the separator (dash dash semicolon).
-- They run against a migrated, empty database inside a transaction that is rolled back.
INSERT INTO tenants (tenant_id, name) VALUES ('t-contract', 'Contract tenant')
-- ;
INSERT INTO facilities (facility_id, tenant_id, name, kind, timezone, latitude, longitude, criticality_tier, peak_kw)
VALUES ('f-contract', 't-contract', 'F', 'office', 'UTC', 1.0, 2.0, 3, 100.0)
-- ;
INSERT INTO meters (meter_id, facility_id, meter_type, rated_kw) VALUES ('m-contract', 'f-contract', 'hvac', 10.0)
-- ;
SELECT meter_id, facility_id, meter_type, rated_kw, nominal_voltage_v FROM meters WHERE deleted_at IS NULL
-- ;
INSERT INTO bms_endpoints (facility_id, url) VALUES ('f-contract', 'http://127.0.0.1:1/bms/f-contract')
-- ;
INSERT INTO bms_zones (facility_id, zone_id, kind, name, rated_kw, normal_setpoint_c, max_setpoint_c)
VALUES ('f-contract', 'hvac-1', 'hvac', 'Z', 5.0, 22.0, 26.0)
-- ;
INSERT INTO utilities (utility_id, name, bearer_token_hash, hmac_secret) VALUES ('u-contract', 'U', 'h', 's')
-- ;
INSERT INTO dr_events (dr_event_id, utility_id, utility_event_id, state, start_at, end_at, target_kw)
VALUES ('00000000-0000-0000-0000-000000000001', 'u-contract', 'ue-1', 'received', now(), now() + interval '1 hour', 50)
-- ;
UPDATE dr_events SET state = 'scheduled', version = version + 1
WHERE dr_event_id = '00000000-0000-0000-0000-000000000001' AND version = 0
-- ;
INSERT INTO dr_event_facilities (dr_event_id, facility_id, state, target_kw)
VALUES ('00000000-0000-0000-0000-000000000001', 'f-contract', 'pending', 50)
-- ;
INSERT INTO dr_event_log (dr_event_id, entry_type, from_state, to_state)
VALUES ('00000000-0000-0000-0000-000000000001', 'transition', 'received', 'scheduled')
-- ;
INSERT INTO bms_commands (command_id, idempotency_key, dr_event_id, facility_id, zone_id, action, value)
VALUES ('00000000-0000-0000-0000-000000000002', 'k-1', '00000000-0000-0000-0000-000000000001', 'f-contract', 'hvac-1',
        'set_setpoint', 25)
ON CONFLICT (idempotency_key) DO NOTHING
-- ;
INSERT INTO outbox (event_id, topic, key, payload) VALUES ('00000000-0000-0000-0000-000000000003', 'dr-events', 'k', '\x7b7d')
-- ;
SELECT id, topic, key, payload, headers FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
-- ;
INSERT INTO inbox (consumer, message_id) VALUES ('c', 'm') ON CONFLICT DO NOTHING
-- ;
INSERT INTO load_forecasts (facility_id, target_ts, run_at, p10_kw, p50_kw, p90_kw, model_version, quality,
                            weather_available, sensor_coverage)
VALUES ('f-contract', now(), now(), 1, 2, 3, 'v1', 'full', true, 1.0)
ON CONFLICT (facility_id, target_ts) DO UPDATE SET p50_kw = EXCLUDED.p50_kw WHERE load_forecasts.run_at <= EXCLUDED.run_at
-- ;
INSERT INTO users (user_id, tenant_id, email, role, password_hash)
VALUES ('00000000-0000-0000-0000-000000000004', 't-contract', 'a@example.test', 'analyst', 'x')
-- ;
INSERT INTO principal_facilities (principal_id, facility_id) VALUES ('00000000-0000-0000-0000-000000000004', 'f-contract')
