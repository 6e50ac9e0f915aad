-- execbudget ledger, PostgreSQL schema version 0002: a leaner reserve and settle.
--
-- Same signatures, results and concurrency rules as 0001 (see there); fewer statements
-- per call, and fewer still between taking the chain's row locks and the commit. Every
-- hot-row transaction holds the org row's lock through its commit, so that window is
-- what caps a hot org's pairs per second:
--   * reserve reads the chain's ids and pre-checks it in one statement, and locks the
--     chain and re-checks it in one statement (0001: two each);
--   * settle reads the keys and works out the charges in one statement inside its own
--     body: 0001 called eb_keys, a SQL function PostgreSQL plans again on every call
--     (about a third of a settle), then eb_apply;
--   * "now" is computed inline;
--   * before its row locks, each takes a transaction-scoped advisory lock on its chain's
--     first line id (usually the org): waiters on a hot row all wake each time it
--     changes hands (the row's new version has a new lock queue), so a crowd on an org
--     row spends its time in the lock manager; the advisory lock queues them in order
--     and wakes one at a time. The row locks still make it correct: the reaper and 0001
--     code take none of these, and one advisory lock before any row lock cannot
--     deadlock.
-- eb_apply stays as it was for eb_reap.

CREATE OR REPLACE FUNCTION @schema@.eb_reserve(
    p_rid text, p_scopes text[], p_wins text[], p_dims text[], p_limits bigint[],
    p_amounts bigint[], p_window_ends bigint[], p_ttl_ms bigint, p_on_expiry text,
    p_charge_now boolean, p_now_ms bigint,
    OUT status text, OUT expires_at_ms bigint, OUT d_index integer, OUT d_limit bigint,
    OUT d_spent bigint, OUT d_held bigint, OUT d_reason text
) LANGUAGE plpgsql AS $$
DECLARE
    v_now   bigint := coalesce(p_now_ms, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    v_n     integer := cardinality(p_scopes);
    v_ids   bigint[];
    v_found integer;
    v_bad   bigint;
    v_root  bigint;
    v_new   bigint[] := '{}';
    v_seq   bigint[];
    v_state text;
BEGIN
    -- 0. A retry of a known rid changes nothing.
    SELECT h.state, h.expires_at_ms INTO v_state, expires_at_ms
      FROM @schema@.eb_hold h WHERE h.rid = p_rid;
    IF FOUND THEN
        status := CASE WHEN v_state = 'held' THEN 'dup' ELSE 'settled' END;
        RETURN;
    END IF;

    -- 1. The chain's line ids (in chain order) and a check without locking: a chain that
    --    cannot grant on the last committed books is denied at once, writing nothing (no
    --    WAL flush, no hot row lock held while a spent budget turns callers away). A
    --    grant is checked again under the locks.
    SELECT array_agg(l.id ORDER BY k.i), count(l.id), min(l.id),
           min(k.i) FILTER (WHERE l.blocked IS NOT NULL
                               OR coalesce(l.spent, 0)::numeric + coalesce(l.held, 0) + k.amt
                                  > coalesce(l.override, k.lim))
      INTO v_ids, v_found, v_root, v_bad
      FROM unnest(p_scopes, p_wins, p_dims, p_limits, p_amounts) WITH ORDINALITY
               AS k(s, w, d, lim, amt, i)
      LEFT JOIN @schema@.eb_line l ON l.scope = k.s AND l.win = k.w AND l.dim = k.d;
    IF v_bad IS NOT NULL THEN
        SELECT k.i - 1, coalesce(l.override, k.lim), coalesce(l.spent, 0), coalesce(l.held, 0),
               coalesce(l.blocked, 'limit')
          INTO d_index, d_limit, d_spent, d_held, d_reason
          FROM unnest(p_scopes, p_wins, p_dims, p_limits) WITH ORDINALITY AS k(s, w, d, lim, i)
          LEFT JOIN @schema@.eb_line l ON l.scope = k.s AND l.win = k.w AND l.dim = k.d
         WHERE k.i = v_bad;
        status := 'denied';
        RETURN;
    END IF;

    -- 2. Lines seen for the first time are created sorted by key, so two creators of
    --    overlapping chains wait on each other in one order; a creator waits for a
    --    concurrent creator's commit (ON CONFLICT), then reads the line it made.
    IF v_found < v_n THEN
        WITH ins AS (
            INSERT INTO @schema@.eb_line (scope, win, dim, lim, window_end_ms)
            SELECT k.s, k.w, k.d, k.l, k.e
              FROM unnest(p_scopes, p_wins, p_dims, p_limits, p_window_ends) AS k(s, w, d, l, e)
             ORDER BY k.s, k.w, k.d
            ON CONFLICT (scope, win, dim) DO NOTHING
            RETURNING id
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_new FROM ins;
        SELECT array_agg(l.id ORDER BY k.i), min(l.id) INTO v_ids, v_root
          FROM unnest(p_scopes, p_wins, p_dims) WITH ORDINALITY AS k(s, w, d, i)
          JOIN @schema@.eb_line l ON l.scope = k.s AND l.win = k.w AND l.dim = k.d;
    END IF;

    -- 3. The reservation row and its events, before any line is locked: a concurrent
    --    retry with the same rid waits on this row and then answers dup; and the hot
    --    line locks below are held for as short a time as possible.
    INSERT INTO @schema@.eb_hold AS h (rid, state, line_ids, amounts, charged, created_ms,
                                       expires_at_ms, on_expiry, settled_ms)
    VALUES (p_rid, CASE WHEN p_charge_now THEN 'committed' ELSE 'held' END, v_ids, p_amounts,
            CASE WHEN p_charge_now THEN p_amounts END, v_now, v_now + p_ttl_ms, p_on_expiry,
            CASE WHEN p_charge_now THEN v_now END)
    ON CONFLICT (rid) DO NOTHING;
    IF NOT FOUND THEN
        SELECT h.state, h.expires_at_ms INTO v_state, expires_at_ms
          FROM @schema@.eb_hold h WHERE h.rid = p_rid;
        status := CASE WHEN v_state = 'held' THEN 'dup' ELSE 'settled' END;
        IF cardinality(v_new) > 0 THEN
            DELETE FROM @schema@.eb_line WHERE id = ANY (v_new);
        END IF;
        RETURN;
    END IF;
    IF p_charge_now THEN
        WITH ev AS (
            INSERT INTO @schema@.eb_event (ts_ms, kind, rid, line_ids, amounts)
            SELECT v_now, k.kind, p_rid, v_ids, p_amounts
              FROM unnest(ARRAY['reserve', 'commit']) WITH ORDINALITY AS k(kind, i)
             ORDER BY k.i
            RETURNING seq
        )
        SELECT array_agg(seq) INTO v_seq FROM ev;
    ELSE
        INSERT INTO @schema@.eb_event (ts_ms, kind, rid, line_ids, amounts)
        VALUES (v_now, 'reserve', p_rid, v_ids, p_amounts)
        RETURNING ARRAY[seq] INTO v_seq;
    END IF;

    -- 4. Queue for the chain's first line (in id order: the root, usually the org), then
    --    lock the chain in the one global order and check every line again, in chain
    --    order; the first that cannot grant denies. (FOR UPDATE reads each line as its
    --    last holder left it.)
    PERFORM pg_advisory_xact_lock(hashtext('execbudget.@schema@'), (v_root % 2147483648)::integer);
    SELECT k.i - 1, coalesce(l.override, k.lim), l.spent, l.held, coalesce(l.blocked, 'limit')
      INTO d_index, d_limit, d_spent, d_held, d_reason
      FROM (SELECT * FROM @schema@.eb_line WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE) l
      JOIN unnest(v_ids, p_limits, p_amounts) WITH ORDINALITY AS k(id, lim, amt, i)
        ON l.id = k.id
     WHERE l.blocked IS NOT NULL
        OR l.spent::numeric + l.held + k.amt > coalesce(l.override, k.lim)
     ORDER BY k.i
     LIMIT 1;
    IF FOUND THEN
        -- Denied after all (the books moved since step 1): undo what this call wrote.
        DELETE FROM @schema@.eb_event WHERE seq = ANY (v_seq);
        DELETE FROM @schema@.eb_hold WHERE rid = p_rid;
        IF cardinality(v_new) > 0 THEN
            DELETE FROM @schema@.eb_line WHERE id = ANY (v_new);
        END IF;
        status := 'denied';
        RETURN;
    END IF;

    -- 5. Apply to every line. The policy's limit is stored; an override still wins.
    IF p_charge_now THEN
        UPDATE @schema@.eb_line l SET spent = l.spent + k.amt, lim = k.lim
          FROM unnest(v_ids, p_amounts, p_limits) AS k(id, amt, lim) WHERE l.id = k.id;
    ELSE
        UPDATE @schema@.eb_line l SET held = l.held + k.amt, lim = k.lim
          FROM unnest(v_ids, p_amounts, p_limits) AS k(id, amt, lim) WHERE l.id = k.id;
    END IF;
    status := 'ok';
    expires_at_ms := v_now + p_ttl_ms;
END
$$;

-- settle: at most once. status: ok | overrun | settled (charged = the earlier charge) | unknown
-- The steps of eb_apply (0001), with the keys and the charges read in one statement.
CREATE OR REPLACE FUNCTION @schema@.eb_settle(
    p_rid text, p_mode text, p_dims text[], p_actual bigint[], p_now_ms bigint,
    OUT status text, OUT scopes text[], OUT wins text[], OUT dims text[], OUT charged bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_hold @schema@.eb_hold;
    v_over boolean;
    v_now  bigint;
BEGIN
    SELECT * INTO v_hold FROM @schema@.eb_hold WHERE rid = p_rid FOR UPDATE;
    IF NOT FOUND THEN
        status := 'unknown';
        RETURN;
    END IF;
    -- The keys, and what each line is charged: commit charges actual[dimension] (an
    -- omitted dimension in full), expire_charge the whole hold, release and expire nothing.
    SELECT coalesce(array_agg(l.scope ORDER BY k.i), '{}'),
           coalesce(array_agg(l.win ORDER BY k.i), '{}'),
           coalesce(array_agg(l.dim ORDER BY k.i), '{}'),
           array_agg(CASE p_mode
                         WHEN 'commit' THEN coalesce(a.v, k.amt)
                         WHEN 'expire_charge' THEN k.amt
                         ELSE 0
                     END ORDER BY k.i)
      INTO scopes, wins, dims, charged
      FROM unnest(v_hold.line_ids, v_hold.amounts) WITH ORDINALITY AS k(id, amt, i)
      JOIN @schema@.eb_line l ON l.id = k.id
      LEFT JOIN unnest(p_dims, p_actual) AS a(d, v) ON a.d = l.dim;
    IF v_hold.state <> 'held' THEN
        status := 'settled';
        charged := coalesce(v_hold.charged, '{}');
        RETURN;
    END IF;
    v_now := coalesce(p_now_ms, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);

    UPDATE @schema@.eb_hold
       SET state = CASE p_mode
                       WHEN 'commit' THEN 'committed'
                       WHEN 'release' THEN 'released'
                       WHEN 'expire' THEN 'expired'
                       ELSE 'expire_charge'
                   END,
           charged = eb_settle.charged,
           settled_ms = v_now
     WHERE rid = p_rid;
    INSERT INTO @schema@.eb_event (ts_ms, kind, rid, line_ids, amounts)
    VALUES (v_now, p_mode, p_rid, v_hold.line_ids, eb_settle.charged);

    -- Lines last: the hot row locks are held only from here to the commit. Queue for the
    -- root first, as reserve does.
    PERFORM pg_advisory_xact_lock(hashtext('execbudget.@schema@'),
                                  ((SELECT min(x) FROM unnest(v_hold.line_ids) x) % 2147483648)::integer);
    PERFORM 1 FROM @schema@.eb_line WHERE id = ANY (v_hold.line_ids) ORDER BY id FOR UPDATE;
    WITH upd AS (
        UPDATE @schema@.eb_line l
           SET held = l.held - k.amt,
               spent = l.spent + k.c,
               overrun = l.overrun + greatest(k.c - k.amt, 0),
               blocked = CASE WHEN k.c > k.amt THEN coalesce(l.blocked, 'overrun') ELSE l.blocked END
          FROM unnest(v_hold.line_ids, v_hold.amounts, eb_settle.charged) AS k(id, amt, c)
         WHERE l.id = k.id
        RETURNING k.c > k.amt AS over
    )
    SELECT bool_or(over) INTO v_over FROM upd;
    status := CASE WHEN v_over THEN 'overrun' ELSE 'ok' END;
END
$$;
