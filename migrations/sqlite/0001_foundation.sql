-- Org directory, staff accounts, sessions, API tokens and the audit log.
-- Times are UTC, stored as RFC 3339 text (sqlx's encoding of chrono::DateTime<Utc>).

CREATE TABLE units (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('province', 'city', 'district', 'enterprise')),
    parent_id   INTEGER REFERENCES units (id),
    -- materialised path of codes, e.g. /130000/130200/; a subtree is a range of it
    path        TEXT NOT NULL UNIQUE,
    sectors     TEXT NOT NULL DEFAULT '',
    mailbox     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX units_parent ON units (parent_id);

CREATE TABLE people (
    id          INTEGER PRIMARY KEY,
    unit_id     INTEGER NOT NULL REFERENCES units (id),
    name        TEXT NOT NULL,
    roles       TEXT NOT NULL,
    email       TEXT,
    mobile      TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (unit_id, name)
);

CREATE TABLE staff_accounts (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'convener', 'bureau', 'leader')),
    unit_id        INTEGER NOT NULL REFERENCES units (id),
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TEXT NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES staff_accounts (id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES staff_accounts (id),
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    revoked       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    subject_type  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    before        TEXT,
    after         TEXT
);
CREATE INDEX audit_subject ON audit_events (subject_type, subject_id);

-- The audit log is append-only.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
