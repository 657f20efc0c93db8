-- Dispatches (one cascade each), their meetings and invitations, and the job queue.

CREATE TABLE dispatches (
    id               INTEGER PRIMARY KEY,
    template_id      TEXT NOT NULL,
    title            TEXT NOT NULL,
    sector           TEXT,
    root_unit_id     INTEGER NOT NULL REFERENCES units (id),
    timezone         TEXT NOT NULL,
    planned_start    TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'finished', 'cancelled')),
    -- the template's text as it was when the dispatch was published
    template_source  TEXT NOT NULL,
    chosen_units     TEXT NOT NULL DEFAULT '',
    -- skipped units, double-bookings and warnings of the plan, as JSON
    plan_report      TEXT NOT NULL,
    cancel_reason    TEXT,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE meetings (
    id              INTEGER PRIMARY KEY,
    dispatch_id     INTEGER NOT NULL REFERENCES dispatches (id),
    parent_id       INTEGER REFERENCES meetings (id),
    tier            TEXT NOT NULL,
    tier_index      INTEGER NOT NULL,
    host_unit_id    INTEGER NOT NULL REFERENCES units (id),
    title           TEXT NOT NULL,
    joins_parent    BOOLEAN NOT NULL,
    room_name       TEXT NOT NULL,
    planned_start   TEXT NOT NULL,
    planned_end     TEXT NOT NULL,
    -- minutes the host moved the meeting from the time its tier's rule gives
    offset_minutes  INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'finished', 'cancelled')),
    actual_start    TEXT,
    actual_end      TEXT,
    record          BOOLEAN NOT NULL,
    -- iCalendar SEQUENCE: bumped on every change people are told about
    sequence        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX meetings_dispatch ON meetings (dispatch_id);
CREATE INDEX meetings_host ON meetings (host_unit_id);
CREATE INDEX meetings_room ON meetings (room_name);

CREATE TABLE invitations (
    id           INTEGER PRIMARY KEY,
    meeting_id   INTEGER NOT NULL REFERENCES meetings (id),
    unit_id      INTEGER NOT NULL REFERENCES units (id),
    person_id    INTEGER REFERENCES people (id),
    role         TEXT NOT NULL CHECK (role IN ('host', 'speaker', 'attendee', 'observer')),
    can_publish  BOOLEAN NOT NULL,
    rsvp         TEXT NOT NULL DEFAULT 'pending' CHECK (rsvp IN ('pending', 'confirmed', 'declined', 'delegated')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX invitations_meeting ON invitations (meeting_id);
CREATE INDEX invitations_unit ON invitations (unit_id);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    run_at        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL DEFAULT 8,
    last_error    TEXT,
    lease_until   TEXT,
    locked_by     TEXT,
    -- one job per effect: enqueueing the same key twice is a no-op
    dedupe_key    TEXT UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_at);
