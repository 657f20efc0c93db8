-- Confirmation of attendance (确认参会) and the finalised attendance report.

ALTER TABLE invitations ADD COLUMN attendee_name TEXT;
ALTER TABLE invitations ADD COLUMN attendee_title TEXT;
ALTER TABLE invitations ADD COLUMN attendee_mobile TEXT;
ALTER TABLE invitations ADD COLUMN decline_reason TEXT;
-- 替会: the deputy attending instead
ALTER TABLE invitations ADD COLUMN delegate_name TEXT;

CREATE TABLE attendance_results (
    invitation_id     INTEGER PRIMARY KEY REFERENCES invitations (id),
    meeting_id        INTEGER NOT NULL REFERENCES meetings (id),
    first_join        TEXT,
    last_leave        TEXT,
    connected_seconds INTEGER NOT NULL,
    reconnects        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    computed_at       TEXT NOT NULL
);
CREATE INDEX attendance_results_meeting ON attendance_results (meeting_id);
