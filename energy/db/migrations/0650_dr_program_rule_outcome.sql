-- 0650 An OpenADR event that a program rule keeps from being dispatched (decision 0850) is recorded
-- like one that targets none of our facilities: a new intake outcome. Expand only (a wider CHECK).
ALTER TABLE dr_event_intake DROP CONSTRAINT IF EXISTS dr_event_intake_outcome_check;
ALTER TABLE dr_event_intake ADD CONSTRAINT dr_event_intake_outcome_check
    CHECK (outcome IN ('not_applicable', 'deleted', 'missed', 'rule_violation'));
