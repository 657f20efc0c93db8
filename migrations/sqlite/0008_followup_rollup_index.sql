-- Lets the closure roll-up read everything it needs from the index: the path range, and the
-- status, due date, tier and dispatch it groups and filters by.
CREATE INDEX followups_rollup ON followups (assignee_path, status, due_at, tier, dispatch_id);
