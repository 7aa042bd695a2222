//! Journal tables. Versioned with `PRAGMA user_version`; each step runs once, in order.

pub const MIGRATIONS: &[&str] = &[
    // v1: messages, their trace, the destination outboxes, API tokens.
    r#"
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    channel       TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    peer          TEXT,
    received_at   INTEGER NOT NULL,          -- unix microseconds
    receive_us    INTEGER NOT NULL DEFAULT 0, -- time from receipt to the commit request
    receive_note  TEXT,                      -- what the receive step noticed (duplicate...)
    control_id    TEXT,                      -- MSH-10
    sender        TEXT    NOT NULL DEFAULT '', -- MSH-3^MSH-4
    message_type  TEXT,                      -- MSH-9 as TYPE^EVENT
    content_type  TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    digest        BLOB,                      -- keyed digest of the raw bytes
    raw           BLOB    NOT NULL,          -- AES-256-GCM sealed
    status        TEXT    NOT NULL,
    ack           TEXT,                      -- acknowledgement code sent back
    error         TEXT,
    duplicate_of  INTEGER,
    generation    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX messages_by_channel ON messages(channel, id);
CREATE INDEX messages_by_status ON messages(status, id);
CREATE INDEX messages_by_time ON messages(received_at);
CREATE INDEX messages_by_key ON messages(channel, sender, control_id);

CREATE TABLE trace (
    message_id   INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    generation   INTEGER NOT NULL,
    step         TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    duration_us  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    detail       TEXT,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    generation      INTEGER NOT NULL,
    channel         TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    payload         BLOB,                    -- sealed; NULL = the raw message itself
    status          TEXT    NOT NULL,        -- pending, inflight, sent, dead, cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    redeliveries    INTEGER NOT NULL DEFAULT 0, -- attempts cut by a crash: maybe delivered twice
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL,
    UNIQUE (message_id, generation, destination)
);
CREATE INDEX outbox_queue ON outbox(channel, destination, status, id);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB    NOT NULL,
    name        TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
"#,
    // v2: retransmissions are recognised from the writer's memory of recent messages
    // (writer/recent.rs); the index on (channel, sender, control_id) cost every commit one
    // page per sender and is no longer read.
    "DROP INDEX IF EXISTS messages_by_key;",
    // v3: facts about the journal itself, such as the sealed value that tells at open whether
    // the encryption key is this journal's (`key_check`).
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"#,
    // v4: the steps a message went through at receipt (parse, filters, transform), as JSON on
    // its own row: trace rows for them cost each commit three pages of a WITHOUT ROWID table.
    // Later steps (deliveries, reprocess, a run by the processor) stay in `trace`.
    "ALTER TABLE messages ADD COLUMN steps TEXT;",
];
