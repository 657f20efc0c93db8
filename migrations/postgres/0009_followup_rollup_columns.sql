-- What the closure roll-up computes from every row, stored once when the follow-up is written
-- (neither the due date nor the assignee's path changes afterwards), so that the roll-up adds
-- integers and groups on plain indexed columns instead of converting dates and cutting paths.

ALTER TABLE followups
    -- The due date in microseconds since 1970-01-01 UTC, for days overdue in integer
    -- arithmetic (EXTRACT(EPOCH …) is numeric, slow to sum).
    ADD COLUMN due_us BIGINT NOT NULL DEFAULT 0,
    -- The unit codes of the assignee's path by depth (`/130000/130200/` has 130000 and
    -- 130200; deeper ones are ''). Levels nest province > city > district > enterprise, so a
    -- path has at most four segments. The region of a follow-up under a scope of depth n is
    -- code_{n+1}: a plain column whose groups the planner can estimate from its statistics.
    ADD COLUMN code_1 TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN code_2 TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN code_3 TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN code_4 TEXT COLLATE "C" NOT NULL DEFAULT '';

UPDATE followups SET
    due_us = (EXTRACT(EPOCH FROM due_at) * 1000000)::BIGINT,
    code_1 = split_part(assignee_path, '/', 2),
    code_2 = split_part(assignee_path, '/', 3),
    code_3 = split_part(assignee_path, '/', 4),
    code_4 = split_part(assignee_path, '/', 5);

-- The roll-up filters on the scope's codes and reads everything else from this index; it
-- groups by hashing, so one index serves both groupings.
DROP INDEX followups_rollup;
CREATE INDEX followups_rollup_codes
    ON followups (code_1, code_2, code_3, code_4, status, due_us, tier, dispatch_id);
