-- pgvector: the extension, and the schema where the app creates one table per vector index
-- at run time (the first vector_upsert into an index creates its table).
--
-- CREATE EXTENSION needs the database owner, so it happens here, at migration time, never
-- from the app. The app may CREATE in the `vectors` schema: today it connects as the
-- migrating role, which owns the schema; a least-privilege app role must be granted
-- USAGE and CREATE on it (the migration that creates that role does so, and the DO block
-- below grants it when the role already exists).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE SCHEMA IF NOT EXISTS vectors;
REVOKE ALL ON SCHEMA vectors FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmo_app') THEN
        GRANT USAGE, CREATE ON SCHEMA vectors TO llmo_app;
    END IF;
END
$$;
