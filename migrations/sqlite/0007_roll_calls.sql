-- Roll calls (点名): a check, with a time limit, of who answers from the room.

CREATE TABLE roll_calls (
    id          INTEGER PRIMARY KEY,
    meeting_id  INTEGER NOT NULL REFERENCES meetings (id),
    room_name   TEXT NOT NULL,
    started_by  TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ends_at     TEXT NOT NULL
);
CREATE INDEX roll_calls_room ON roll_calls (room_name);

CREATE TABLE roll_call_answers (
    roll_call_id   INTEGER NOT NULL REFERENCES roll_calls (id),
    invitation_id  INTEGER NOT NULL REFERENCES invitations (id),
    answered_at    TEXT NOT NULL,
    PRIMARY KEY (roll_call_id, invitation_id)
);
