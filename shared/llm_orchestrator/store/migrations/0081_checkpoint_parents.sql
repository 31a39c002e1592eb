-- An automatic checkpoint no longer copies every completed step's outputs: it stores the
-- inputs and its own step's outputs, and names the checkpoint it extends (``parent_id``):
-- the one the execution's previous commit wrote, or the one it was restored to
-- (``executions.last_checkpoint_id``). A chain of N steps wrote N checkpoints of up to N
-- steps each (N² outputs, aggregated and copied by the steps' commits); it now writes N.
-- A stored checkpoint without a parent holds its whole snapshot, as every one written
-- before this migration, and every manual one, does.
--
-- What is stored is ``checkpoint_rows``; ``checkpoints`` is the view every reader reads,
-- with each checkpoint's whole snapshot as before.
ALTER TABLE checkpoints RENAME TO checkpoint_rows;
ALTER TABLE checkpoint_rows ADD COLUMN parent_id text;
ALTER TABLE executions ADD COLUMN last_checkpoint_id text;

-- The snapshot of a stored checkpoint with a parent: its inputs, and the steps of every
-- checkpoint up its chain of parents, the nearest one's outputs winning (a step is in a
-- chain once; the order only matters should it not be).
CREATE FUNCTION checkpoint_snapshot(checkpoint text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT c.parent_id, c.snapshot, 0 AS depth FROM checkpoint_rows c WHERE c.id = checkpoint
        UNION ALL
        SELECT c.parent_id, c.snapshot, chain.depth + 1
        FROM checkpoint_rows c JOIN chain ON c.id = chain.parent_id
    )
    SELECT jsonb_build_object(
        'inputs', (SELECT snapshot->'inputs' FROM chain WHERE depth = 0),
        'steps', COALESCE((
            SELECT jsonb_object_agg(s.key, s.value ORDER BY chain.depth DESC)
            FROM chain, jsonb_each(chain.snapshot->'steps') AS s
        ), '{}'::jsonb)
    )
$$;

CREATE VIEW checkpoints AS
SELECT id, execution_id, step_id, kind,
       CASE WHEN parent_id IS NULL THEN snapshot ELSE checkpoint_snapshot(id) END AS snapshot,
       created_at
FROM checkpoint_rows;
