-- Confirmation of attendance (确认参会) and the finalised attendance report.

ALTER TABLE invitations ADD COLUMN attendee_name TEXT;
ALTER TABLE invitations ADD COLUMN attendee_title TEXT;
ALTER TABLE invitations ADD COLUMN attendee_mobile TEXT;
ALTER TABLE invitations ADD COLUMN decline_reason TEXT;
-- 替会: the deputy attending instead
ALTER TABLE invitations ADD COLUMN delegate_name TEXT;

CREATE TABLE attendance_results (
    invitation_id     BIGINT PRIMARY KEY REFERENCES invitations (id),
    meeting_id        BIGINT NOT NULL REFERENCES meetings (id),
    first_join        TIMESTAMPTZ,
    last_leave        TIMESTAMPTZ,
    connected_seconds BIGINT NOT NULL,
    reconnects        BIGINT NOT NULL,
    status            TEXT NOT NULL,
    computed_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX attendance_results_meeting ON attendance_results (meeting_id);
