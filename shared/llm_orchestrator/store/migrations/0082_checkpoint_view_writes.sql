-- Two repairs to 0081 (checkpoints that name the one they extend).
--
-- 1. Writes through ``checkpoints``. The code from before 0081 inserts into
--    ``checkpoints``, which 0081 made a view, and the view refused: on AWS, the functions
--    still on that code between this migration and their own update (or after a deploy
--    rolled back past it) failed every step's commit. An insert into the view now stores
--    the row as that code wrote it, a whole snapshot; an automatic one (written by a
--    step's commit, which holds the execution's row) becomes the execution's latest, so
--    the next chained checkpoint extends it.
--
-- 2. A walk that ends. ``checkpoint_snapshot`` followed parents for as long as there were
--    any: a cycle made by hand looped until the statement timed out. It now stops at
--    10,000 levels, ten times the longest chain a run can write (a chain has one
--    checkpoint per completed step of one line of history, and a workflow at most 1,000
--    steps).
CREATE FUNCTION checkpoints_view_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := COALESCE(NEW.created_at, clock_timestamp());
    INSERT INTO checkpoint_rows (id, execution_id, step_id, kind, snapshot, created_at)
    VALUES (NEW.id, NEW.execution_id, NEW.step_id, NEW.kind, NEW.snapshot, NEW.created_at);
    IF NEW.kind = 'auto' THEN
        UPDATE executions SET last_checkpoint_id = NEW.id WHERE id = NEW.execution_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER checkpoints_view_insert INSTEAD OF INSERT ON checkpoints
FOR EACH ROW EXECUTE FUNCTION checkpoints_view_insert();

CREATE OR REPLACE FUNCTION checkpoint_snapshot(checkpoint text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT c.parent_id, c.snapshot, 0 AS depth FROM checkpoint_rows c WHERE c.id = checkpoint
        UNION ALL
        SELECT c.parent_id, c.snapshot, chain.depth + 1
        FROM checkpoint_rows c JOIN chain ON c.id = chain.parent_id
        WHERE chain.depth < 10000
    )
    SELECT jsonb_build_object(
        'inputs', (SELECT snapshot->'inputs' FROM chain WHERE depth = 0),
        'steps', COALESCE((
            SELECT jsonb_object_agg(s.key, s.value ORDER BY chain.depth DESC)
            FROM chain, jsonb_each(chain.snapshot->'steps') AS s
        ), '{}'::jsonb)
    )
$$;
