//! Every schema of the store and its forward migrations, in one place. A database's
//! `PRAGMA user_version` is the number of steps it has applied; opening runs the rest. Steps are
//! append-only: never edit a released step, add a new one.
//!
//! Tables are STRICT so a wrong type is an error instead of a silently coerced value. Enums
//! (roles, prompt statuses) are stored as their snake_case names, checked by CHECK constraints.

/// One forward step: a name for the log and the SQL it runs (inside a transaction).
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// `DATA/control.db`: who may do what. Small, shared by every request, touched rarely on the hot
/// path (authentication reads one row; `last_used_ms` is written at most once a minute per token).
pub(crate) const CONTROL: &[Migration] = &[
    Migration {
        name: "initial",
        sql: "
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;

        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
            created_at_ms INTEGER NOT NULL
        ) STRICT;

        -- Only the SHA-256 of a token is kept; the token is shown once, at creation.
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            hash BLOB NOT NULL UNIQUE,
            created_at_ms INTEGER NOT NULL,
            last_used_ms INTEGER
        ) STRICT;
        CREATE INDEX tokens_by_user ON tokens(user_id);

        CREATE TABLE repos (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            default_branch TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL
        ) STRICT;

        -- The index of sessions; each one's log lives in DATA/sessions/<id>/session.db.
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            repo TEXT NOT NULL REFERENCES repos(name),
            title TEXT NOT NULL,
            created_by TEXT NOT NULL REFERENCES users(id),
            created_at_ms INTEGER NOT NULL,
            closed INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1))
        ) STRICT;

        CREATE TABLE members (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'collaborator', 'owner')),
            joined_at_ms INTEGER NOT NULL,
            PRIMARY KEY (session_id, user_id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX members_by_user ON members(user_id);

        -- Share links; like tokens, only the code's hash is kept.
        CREATE TABLE shares (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'collaborator', 'owner')),
            code_hash BLOB NOT NULL UNIQUE,
            created_by TEXT NOT NULL REFERENCES users(id),
            created_at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        name: "repo hooks",
        // A JSON array of `stored::StoredHook`s: read and written whole, never queried inside.
        sql: "ALTER TABLE repos ADD COLUMN hooks TEXT NOT NULL DEFAULT '[]';",
    },
    Migration {
        name: "images",
        sql: "
        CREATE TABLE images (
            id TEXT PRIMARY KEY,
            repo TEXT NOT NULL REFERENCES repos(name),
            commit_sha TEXT NOT NULL,
            parent TEXT REFERENCES images(id),
            layers TEXT NOT NULL,
            lockfile_hash TEXT NOT NULL,
            setup_ran INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ready', 'failed')),
            error TEXT,
            log TEXT NOT NULL,
            duration_ms INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX images_by_repo ON images (repo, created_at_ms);
    ",
    },
    Migration {
        name: "image runtime and collection",
        sql: "
        -- An environment definition (TOML) set through the API, overriding the repo's file.
        ALTER TABLE repos ADD COLUMN environment TEXT;
        -- JSON `stored::StoredRuntime`: the env and limits of every sandbox made from the image.
        ALTER TABLE images ADD COLUMN runtime TEXT NOT NULL DEFAULT '{}';
        -- Set when the garbage collector removed the image's layers; the record stays.
        ALTER TABLE images ADD COLUMN collected_at_ms INTEGER;
    ",
    },
    Migration {
        name: "repo access",
        sql: "
        -- A repo open to its members only has a row here; without one it is open to everyone.
        CREATE TABLE repo_access (
            repo TEXT PRIMARY KEY REFERENCES repos(name) ON DELETE CASCADE,
            mode TEXT NOT NULL CHECK (mode IN ('everyone', 'members'))
        ) STRICT;
        CREATE TABLE repo_members (
            repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            PRIMARY KEY (repo, user_id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX repo_members_by_user ON repo_members(user_id);
    ",
    },
    Migration {
        name: "repo credentials apart from urls",
        // `https://user:token@host/x.git` becomes url `https://host/x.git` and credentials
        // `user:token` (still percent-encoded), so the url can be shown and the credentials
        // are read only by the fetch. The userinfo ends at the last `@` before the first `/`
        // after `://`; `rtrim(a, replace(a, '@', ''))` cuts `a` after its last `@`.
        sql: "
        ALTER TABLE repos ADD COLUMN credentials TEXT;
        WITH split AS (
            SELECT name, scheme, authority, rest,
                   length(rtrim(authority, replace(authority, '@', ''))) AS at
            FROM (
                SELECT name,
                       substr(url, 1, instr(url, '://') + 2) AS scheme,
                       CASE WHEN instr(tail, '/') > 0
                            THEN substr(tail, 1, instr(tail, '/') - 1) ELSE tail END AS authority,
                       CASE WHEN instr(tail, '/') > 0
                            THEN substr(tail, instr(tail, '/')) ELSE '' END AS rest
                FROM (SELECT name, url, substr(url, instr(url, '://') + 3) AS tail FROM repos
                      WHERE lower(url) LIKE 'http://%' OR lower(url) LIKE 'https://%')
            )
        )
        UPDATE repos
        SET credentials = substr(split.authority, 1, split.at - 1),
            url = split.scheme || substr(split.authority, split.at + 1) || split.rest
        FROM split
        WHERE repos.name = split.name AND split.at > 0;
    ",
    },
    Migration {
        name: "login codes and browser sessions",
        sql: "
        -- Single-use sign-in codes (`kiln login-link`): only the hash is kept, and a code is
        -- deleted when it is exchanged for a browser session.
        CREATE TABLE login_codes (
            code_hash BLOB PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) STRICT;

        -- Browser sessions: the secret is in an HttpOnly cookie, only its hash here.
        CREATE TABLE browser_sessions (
            hash BLOB PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX browser_sessions_by_expiry ON browser_sessions(expires_at_ms);
    ",
    },
    Migration {
        name: "people: profiles, deactivation, expiring tokens and links, archived sessions",
        sql: "
        -- How commits made for the user read: `display_name <email>` ('' and NULL: the user's
        -- name and `<id>@users.kiln.local`).
        ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
        ALTER TABLE users ADD COLUMN email TEXT;
        -- A deactivated user keeps their record (sessions and prompts name them) but has no
        -- token, no browser session and cannot be given new ones.
        ALTER TABLE users ADD COLUMN deactivated_at_ms INTEGER;
        -- NULL: the token does not expire.
        ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
        -- NULL: the link does not expire (links made before links expired).
        ALTER TABLE shares ADD COLUMN expires_at_ms INTEGER;
        -- A single-use link is deleted when it is redeemed.
        ALTER TABLE shares ADD COLUMN single_use INTEGER NOT NULL DEFAULT 0
            CHECK (single_use IN (0, 1));
        -- Set when an owner archives the session: it leaves the default listing.
        ALTER TABLE sessions ADD COLUMN archived_at_ms INTEGER;
    ",
    },
    Migration {
        name: "repo secrets",
        sql: "
        -- Values sealed by kiln-vault (XChaCha20-Poly1305, bound to `repo-secret:REPO:NAME`)
        -- under a key kept outside this database: the store never sees a value in the clear.
        -- fingerprint is the vault's keyed HMAC of the value (did it change?).
        CREATE TABLE repo_secrets (
            repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            ciphertext BLOB NOT NULL,
            agent INTEGER NOT NULL CHECK (agent IN (0, 1)),
            fingerprint TEXT NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            updated_by TEXT NOT NULL REFERENCES users(id),
            PRIMARY KEY (repo, name)
        ) STRICT, WITHOUT ROWID;
        -- JSON array of `stored::StoredImageSecret`: the secrets (name, fingerprint) a build
        -- gave its steps.
        ALTER TABLE images ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
    ",
    },
    Migration {
        name: "github links and sign-in states",
        sql: "
        -- A kiln user's GitHub account (one each way): its tokens sealed by kiln-vault, bound
        -- to `github-token:USER:access|refresh`, under the key kept outside this database.
        CREATE TABLE github_links (
            user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            login TEXT NOT NULL UNIQUE COLLATE NOCASE,
            github_id INTEGER NOT NULL,
            access_ciphertext BLOB NOT NULL,
            refresh_ciphertext BLOB,
            -- NULL: the token does not expire.
            expires_at_ms INTEGER,
            refresh_expires_at_ms INTEGER,
            linked_at_ms INTEGER NOT NULL
        ) STRICT;

        -- The `state` of a GitHub sign-in in progress: only its hash, used once, short-lived;
        -- user_id is set when a signed-in user is linking their account.
        CREATE TABLE oauth_states (
            state_hash BLOB PRIMARY KEY,
            user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
            created_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        name: "forge webhook deliveries and change requests",
        sql: "
        -- Webhook deliveries already handled, by the forge's delivery id (GitHub's
        -- X-GitHub-Delivery): a redelivery changes nothing twice. Pruned after a week.
        CREATE TABLE forge_deliveries (
            delivery TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX forge_deliveries_at ON forge_deliveries (at_ms);

        -- A session's change request on its forge (`owner/name`, number), so a comment on it
        -- finds the session, and its latest state and page, for session listings.
        CREATE TABLE forge_changes (
            forge_repo TEXT NOT NULL COLLATE NOCASE,
            number INTEGER NOT NULL,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            url TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'merged')),
            updated_at_ms INTEGER NOT NULL,
            PRIMARY KEY (forge_repo, number)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX forge_changes_session ON forge_changes (session_id, updated_at_ms);
    ",
    },
    Migration {
        name: "daily spend",
        sql: "
        -- Dollars spent on model requests per UTC day (YYYY-MM-DD), per user (kind 'user', key
        -- a user id) and per repo (kind 'repo', key a repo name): what daily budgets are
        -- checked against. Added to as usage is recorded.
        CREATE TABLE daily_spend (
            day TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'repo')),
            key TEXT NOT NULL,
            cost_usd REAL NOT NULL,
            PRIMARY KEY (day, kind, key)
        ) STRICT, WITHOUT ROWID;
    ",
    },
    Migration {
        name: "audit log",
        sql: "
        -- Security-relevant actions, append-only: the triggers refuse changes and deletes, so
        -- nothing short of editing the file rewrites history.
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            actor_id TEXT,
            actor_name TEXT,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL
        ) STRICT;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    ",
    },
    Migration {
        name: "token scopes",
        // `read`: the token only reads (dashboards, bots); the server refuses everything else.
        sql: "ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'full' \
              CHECK (scope IN ('full', 'read'));",
    },
    Migration {
        name: "sub-sessions: a session's parent",
        sql: "
        -- The session whose agent spawned this one (`spawn_session`); NULL for the rest. The
        -- engine deletes children before their parent; SET NULL only guards the invariant.
        ALTER TABLE sessions ADD COLUMN parent TEXT REFERENCES sessions(id) ON DELETE SET NULL;
        CREATE INDEX sessions_by_parent ON sessions (parent) WHERE parent IS NOT NULL;
    ",
    },
    Migration {
        name: "slack: links, threads, people told how to link",
        sql: "
        -- A Slack user (workspace-unique `U…` id) is one kiln user; a kiln user has one.
        CREATE TABLE slack_links (
            slack_user TEXT PRIMARY KEY,
            user_id TEXT NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
            at_ms INTEGER NOT NULL
        ) STRICT;
        -- The session a Slack thread (channel + the parent message's ts) drives.
        CREATE TABLE slack_threads (
            channel TEXT NOT NULL,
            thread_ts TEXT NOT NULL,
            session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            PRIMARY KEY (channel, thread_ts)
        ) STRICT;
        -- Slack users without a link who were told how to link (told once).
        CREATE TABLE slack_told (
            slack_user TEXT PRIMARY KEY,
            at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
];

/// `DATA/sessions/<id>/session.db`: one session's append-only log and the state derived from it
/// that the engine queries (prompts and their statuses, the model conversation, settings).
pub(crate) const SESSION: &[Migration] = &[
    Migration {
        name: "initial",
        sql: "
        -- Key/value settings of the session, including the id it belongs to (checked on open,
        -- so a misplaced directory is an error rather than another session's log).
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;

        -- The log. seq is the rowid: appends go to the end of the B-tree, and reading after a
        -- seq is a range scan. The envelope is stored exactly as it is sent to clients, so a
        -- replay sends the stored text without re-serializing.
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            at_ms INTEGER NOT NULL,
            envelope TEXT NOT NULL
        ) STRICT;

        -- pos keeps insertion order (oldest first) independent of the random prompt ids.
        CREATE TABLE prompts (
            pos INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            author_id TEXT NOT NULL,
            author_name TEXT NOT NULL,
            text TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'inserted', 'completed',
                                                   'failed', 'cancelled', 'interrupted')),
            created_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX prompts_by_status ON prompts(status, pos);

        -- The conversation with the model, oldest first, each message as the engine gave it.
        CREATE TABLE messages (
            pos INTEGER PRIMARY KEY,
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            message TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        name: "snapshots",
        sql: "
        -- The session's sandbox as it was after a prompt, newest last; a session whose sandbox
        -- is gone continues from the newest. parent is the snapshot it was taken on top of.
        CREATE TABLE snapshots (
            pos INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            parent TEXT,
            prompt_id TEXT,
            layers TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        name: "snapshot base",
        // How many of a snapshot's layers are the image (or clone) the session started from;
        // the rest are the session's own, merged when they pile up. NULL: not known.
        sql: "ALTER TABLE snapshots ADD COLUMN base_layers INTEGER;",
    },
    Migration {
        name: "plans",
        sql: "
        -- Plan mode: a plan-first prompt runs read-only and ends with a proposed plan.
        ALTER TABLE prompts ADD COLUMN plan INTEGER NOT NULL DEFAULT 0;

        -- The plans the agent proposed and what became of them (the log has the events; this
        -- is what a decision checks in its transaction: a plan is decided once).
        CREATE TABLE plans (
            pos INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            title TEXT,
            plan TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
            created_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX plans_by_status ON plans(status, pos);
    ",
    },
];
