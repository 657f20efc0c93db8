-- LiveKit rooms and the attendance ledger.

ALTER TABLE meetings ADD COLUMN room_sid TEXT;
ALTER TABLE meetings ADD COLUMN recording_egress_id TEXT;
ALTER TABLE meetings ADD COLUMN recording_path TEXT;
ALTER TABLE meetings ADD COLUMN recording_status TEXT;

-- Every webhook event applied, by its id: LiveKit delivers at least once.
CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    room_name    TEXT,
    received_at  TEXT NOT NULL
);

-- One LiveKit connection. Every update merges (earliest join, latest explicit leave), so the
-- ledger is the same whatever order the events arrive in.
CREATE TABLE attendance_intervals (
    id               INTEGER PRIMARY KEY,
    room_name        TEXT NOT NULL,
    participant_sid  TEXT NOT NULL UNIQUE,
    identity         TEXT NOT NULL,
    name             TEXT NOT NULL DEFAULT '',
    -- the invitation behind the identity; NULL for guests
    invitation_id    INTEGER REFERENCES invitations (id),
    joined_at        TEXT,
    -- from participant_left / participant_connection_aborted, or reconciliation
    left_at          TEXT,
    left_reason      TEXT,
    -- when room_finished closed the interval without an explicit leave
    room_closed_at   TEXT,
    -- webhook or reconciled (missed join repaired from ListParticipants)
    source           TEXT NOT NULL DEFAULT 'webhook',
    updated_at       TEXT NOT NULL
);
CREATE INDEX attendance_room ON attendance_intervals (room_name);
CREATE INDEX attendance_invitation ON attendance_intervals (invitation_id);
