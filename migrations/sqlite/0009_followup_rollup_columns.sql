-- What the closure roll-up computes from every row, stored once when the follow-up is written
-- (neither the due date nor the assignee's path changes afterwards), so that the roll-up adds
-- integers and groups on plain indexed columns instead of parsing dates and cutting paths.

-- The due date in microseconds since 1970-01-01 UTC, for days overdue in integer arithmetic.
ALTER TABLE followups ADD COLUMN due_us INTEGER NOT NULL DEFAULT 0;
-- The unit codes of the assignee's path by depth (`/130000/130200/` has 130000 and 130200;
-- deeper ones are ''). Levels nest province > city > district > enterprise, so a path has at
-- most four segments. The region of a follow-up under a scope of depth n is code_{n+1}.
ALTER TABLE followups ADD COLUMN code_1 TEXT NOT NULL DEFAULT '';
ALTER TABLE followups ADD COLUMN code_2 TEXT NOT NULL DEFAULT '';
ALTER TABLE followups ADD COLUMN code_3 TEXT NOT NULL DEFAULT '';
ALTER TABLE followups ADD COLUMN code_4 TEXT NOT NULL DEFAULT '';

-- Back-fill. Timestamps are stored as RFC 3339 text; strftime keeps whole seconds, and the
-- fraction's digits (if any, up to microseconds) are read from the text itself.
UPDATE followups SET due_us = CAST(strftime('%s', due_at) AS INTEGER) * 1000000
    + CASE WHEN substr(due_at, 20, 1) = '.' THEN CAST(substr(
        substr(substr(due_at, 21), 1,
            length(substr(due_at, 21)) - length(ltrim(substr(due_at, 21), '0123456789')))
        || '000000', 1, 6) AS INTEGER) ELSE 0 END;
-- Each code is the segment after the previous ones (paths are `/` + `code/` per level).
UPDATE followups SET code_1 = substr(assignee_path, 2, instr(substr(assignee_path, 2), '/') - 1);
UPDATE followups SET code_2 = substr(substr(assignee_path, length(code_1) + 3), 1,
    instr(substr(assignee_path, length(code_1) + 3), '/') - 1);
UPDATE followups SET code_3 = substr(substr(assignee_path, length(code_1) + length(code_2) + 4), 1,
    instr(substr(assignee_path, length(code_1) + length(code_2) + 4), '/') - 1)
    WHERE code_2 <> '';
UPDATE followups SET code_4 = substr(substr(assignee_path, length(code_1) + length(code_2) + length(code_3) + 5), 1,
    instr(substr(assignee_path, length(code_1) + length(code_2) + length(code_3) + 5), '/') - 1)
    WHERE code_3 <> '';

-- The roll-up filters on the scope's codes and reads everything else from these indexes.
-- SQLite has no hash aggregation: it groups in index order or sorts every row, so each
-- grouping gets an index that delivers its rows in group order (by region: the next code
-- after the scope's; by tier: the tier after the province's code).
DROP INDEX followups_rollup;
CREATE INDEX followups_rollup_region
    ON followups (code_1, code_2, code_3, code_4, status, due_us, tier, dispatch_id);
CREATE INDEX followups_rollup_tier
    ON followups (code_1, tier, code_2, code_3, code_4, status, due_us, dispatch_id);
