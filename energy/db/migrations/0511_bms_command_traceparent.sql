-- The W3C traceparent of the saga span that issued each BMS command, so the worker's span (and the
-- SOAP call under it) is a child of that span, not only of the same trace (decision 0508).
ALTER TABLE bms_commands ADD COLUMN IF NOT EXISTS traceparent text;
