-- A user's monthly spend as a few counter rows instead of one: a statement that records
-- calls adds their cost to the row of its own shard (its backend's pid, modulo 64), and a
-- budget read sums the user's rows for the month. With one row, every concurrent execution
-- of the user queued on its lock until the holder had committed (a WAL flush each), so a
-- burst of executions completed one step at a time; transactions on different connections
-- now rarely share a row, and no increment is lost either way (each row is still one
-- atomic counter).
ALTER TABLE user_spend ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE user_spend DROP CONSTRAINT user_spend_pkey;
ALTER TABLE user_spend ADD PRIMARY KEY (owner_id, month, shard);
