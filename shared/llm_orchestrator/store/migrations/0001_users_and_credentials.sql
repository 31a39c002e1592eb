-- Users, API keys and refresh-token families.

CREATE TABLE users (
    id            text PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL,
    tier          text NOT NULL DEFAULT 'free',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login    timestamptz,
    CONSTRAINT users_username_unique UNIQUE (username),
    CONSTRAINT users_roles_known CHECK (roles <@ ARRAY['admin', 'developer', 'viewer']::text[]),
    CONSTRAINT users_tier_known CHECK (tier IN ('free', 'pro', 'enterprise'))
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     text NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash)
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

-- One row per refresh token ever issued. A token is good once: using it marks it used and
-- issues the next one in the same family; presenting a used token again revokes the family.
CREATE TABLE refresh_tokens (
    jti        uuid PRIMARY KEY,
    family_id  uuid NOT NULL,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    CONSTRAINT refresh_tokens_token_hash_unique UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
