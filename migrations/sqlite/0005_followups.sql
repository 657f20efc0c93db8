-- Action items and the follow-ups (督办) they turn into.

CREATE TABLE action_items (
    id            INTEGER PRIMARY KEY,
    dispatch_id   INTEGER REFERENCES dispatches (id),
    meeting_id    INTEGER REFERENCES meetings (id),
    -- the unit on whose behalf it was issued: the meeting's host
    issuer_unit_id INTEGER NOT NULL REFERENCES units (id),
    title         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    due_at        TEXT NOT NULL,
    delegable     BOOLEAN NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX action_items_dispatch ON action_items (dispatch_id);

CREATE TABLE followups (
    id               INTEGER PRIMARY KEY,
    action_item_id   INTEGER NOT NULL REFERENCES action_items (id),
    parent_id        INTEGER REFERENCES followups (id),
    assignee_unit_id INTEGER NOT NULL REFERENCES units (id),
    -- denormalised for subtree roll-ups: the assignee's materialised path and level
    assignee_path    TEXT NOT NULL,
    assignee_level   TEXT NOT NULL,
    assigner_unit_id INTEGER NOT NULL REFERENCES units (id),
    dispatch_id      INTEGER REFERENCES dispatches (id),
    -- tier of the meeting the assignee was invited to, for roll-ups by tier
    tier             TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    assigned_at      TEXT NOT NULL,
    due_at           TEXT NOT NULL,
    closed_at        TEXT,
    -- children delegated and not yet closed, kept in step by every transition
    open_children    INTEGER NOT NULL DEFAULT 0,
    -- last overdue period (days since due) a reminder/escalation went out for
    overdue_period   INTEGER NOT NULL DEFAULT -1,
    reminded_before  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at       TEXT NOT NULL,
    UNIQUE (action_item_id, assignee_unit_id)
);
CREATE INDEX followups_path ON followups (assignee_path);
CREATE INDEX followups_due ON followups (status, due_at);
CREATE INDEX followups_parent ON followups (parent_id);

-- The timeline: every transition, note and report.
CREATE TABLE followup_events (
    id           INTEGER PRIMARY KEY,
    followup_id  INTEGER NOT NULL REFERENCES followups (id),
    action       TEXT NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    text         TEXT NOT NULL DEFAULT '',
    actor        TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX followup_events_followup ON followup_events (followup_id);

CREATE TABLE attachments (
    id            INTEGER PRIMARY KEY,
    followup_id   INTEGER NOT NULL REFERENCES followups (id),
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    -- SHA-256 of the content; the file is stored under this name
    sha256        TEXT NOT NULL,
    uploaded_by   TEXT NOT NULL,
    uploaded_at   TEXT NOT NULL
);
CREATE INDEX attachments_followup ON attachments (followup_id);
