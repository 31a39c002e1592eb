-- Counting one request in every rate-limit window in one round trip (it was BEGIN, one
-- upsert per window and COMMIT: five). All or nothing, as before: every window is counted,
-- and when any went over its limit all are counted back, while this transaction still
-- holds the rows' locks, so a concurrent request never sees the overshoot. The windows are
-- locked in the order given (always minute, hour, day), so two callers cannot deadlock.
-- Returns each window's hits including this request: a refused request is one whose hits
-- exceed a limit (its windows have been counted back).
CREATE FUNCTION rate_limit_hit(
    p_subject text, p_names text[], p_starts timestamptz[], p_limits integer[]
) RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    counted integer[] := '{}';
    n integer;
    over boolean := false;
BEGIN
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
