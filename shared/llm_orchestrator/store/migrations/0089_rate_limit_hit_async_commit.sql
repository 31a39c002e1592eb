-- A rate-limit count commits without waiting for its WAL flush (synchronous_commit off for
-- the rest of the calling transaction). Every authenticated request counts itself in the
-- statement that authenticates it, so with a synchronous commit every request paid for a
-- WAL flush (on this machine's disk 0.5-2 ms, and about half of PostgreSQL's CPU for the
-- statement), and the counter rows stayed locked until that flush was done: the requests
-- of one caller queued one flush at a time. Now the rows are free, and the count visible
-- to every other transaction, as soon as it commits; what an asynchronous commit risks is
-- only durability: a crash of the database server (not of a client) may forget the last
-- fraction of a second of counts, letting a caller that many more requests in the window.
-- Exactness under concurrency is unchanged (row locks, all windows counted or none).
--
-- Only statements that authenticate (and the limiter's own count) call this, each as a
-- transaction of its own whose other write is an API key's last_used_at; a transaction
-- whose writes must be durable must not call it.
CREATE OR REPLACE FUNCTION rate_limit_hit(
    p_subject text, p_names text[], p_starts timestamptz[], p_limits integer[]
) RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    counted integer[] := '{}';
    n integer;
    over boolean := false;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. array_length(p_names, 1) LOOP
        INSERT INTO rate_limit_counters AS c (subject, window_name, window_start, hits)
        VALUES (p_subject, p_names[i], p_starts[i], 1)
        ON CONFLICT (subject, window_name, window_start) DO UPDATE SET hits = c.hits + 1
        RETURNING c.hits INTO n;
        counted := counted || n;
        over := over OR n > p_limits[i];
    END LOOP;
    IF over THEN
        UPDATE rate_limit_counters c SET hits = c.hits - 1
        FROM unnest(p_names, p_starts) AS w(window_name, window_start)
        WHERE c.subject = p_subject AND c.window_name = w.window_name
          AND c.window_start = w.window_start;
    END IF;
    RETURN counted;
END
$$;
