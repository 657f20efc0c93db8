-- Personal invitation links, outgoing messages, and settings muster keeps for itself.

-- The link token is HMAC(link key, invitation id and nonce): regenerable for every message
-- about the invitation, never stored; only its SHA-256 is, for looking the link up.
ALTER TABLE invitations ADD COLUMN link_nonce TEXT;
ALTER TABLE invitations ADD COLUMN link_hash TEXT;
CREATE UNIQUE INDEX invitations_link ON invitations (link_hash);

CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY,
    -- one row per message muster means to send; a retried job finds it and does not resend
    dedupe_key    TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    invitation_id INTEGER REFERENCES invitations (id),
    recipient     TEXT NOT NULL,
    subject       TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    sent_at       TEXT NOT NULL
);
CREATE INDEX notifications_invitation ON notifications (invitation_id);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
