-- The least-privilege role the application connects as: it owns nothing, so it can neither
-- disable the audit table's triggers nor alter any table, and it may only INSERT and SELECT
-- audit events. Migrations run as the owner (the role that created the tables).
--
-- Locally the embedded PostgreSQL lets ``llmo_app`` log in and the app connects as it. With
-- an external database, grant ``llmo_app`` to the login role in LLMO_DATABASE_URL and give
-- the owner's URL as LLMO_MIGRATION_DATABASE_URL (see the README). Creating the role needs
-- CREATEROLE; a migrating user without it gets a notice, and the grants wait for the role
-- (re-run ``llmo migrate`` after an administrator creates it: the grants are repeated by
-- every migration run through store/roles.py).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmo_app') THEN
        BEGIN
            CREATE ROLE llmo_app NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role llmo_app: ask an administrator to create it';
        END;
    END IF;
END
$$;
