-- execbudget ledger, PostgreSQL schema version 0001.
--
-- @schema@ is replaced by the quoted schema name when the migration runs, so every
-- function body names its tables fully and never depends on the caller's search_path.
-- Times are epoch milliseconds (bigint), the unit the Python API speaks; "now" is the
-- server's clock_timestamp() unless the caller passes p_now_ms (a test clock).
--
-- Concurrency rules (READ COMMITTED, one function call per operation, autocommit):
--   * a reservation row is locked before any line (reserve inserts it, settle locks it);
--   * the lines of a chain are locked with ORDER BY id FOR UPDATE, one global order, so
--     overlapping chains never deadlock;
--   * missing lines are created sorted by (scope, win, dim) before any row lock is taken;
--   * every line is checked before any line is written.

CREATE TABLE @schema@.eb_line (
    id            bigserial PRIMARY KEY,     -- the global lock order
    scope         text   NOT NULL,
    win           text   NOT NULL,
    dim           text   NOT NULL,
    lim           bigint NOT NULL,           -- the policy's limit, as passed by the latest reserve
    override      bigint,                    -- an operator's limit; wins until cleared (NULL)
    spent         bigint NOT NULL DEFAULT 0,
    held          bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    overrun       bigint NOT NULL DEFAULT 0,
    blocked       text,                      -- 'overrun', 'killed', ... denies every reserve
    window_end_ms bigint,
    UNIQUE (scope, win, dim)
) WITH (fillfactor = 50);                    -- room for HOT updates of the hot org row

CREATE TABLE @schema@.eb_hold (
    rid           text PRIMARY KEY,          -- client-generated: retries are idempotent
    state         text     NOT NULL,         -- held | committed | released | expired | expire_charge
    line_ids      bigint[] NOT NULL,         -- the chain, in the order of the reserve
    amounts       bigint[] NOT NULL,         -- held per line
    charged       bigint[],                  -- charged per line once settled
    created_ms    bigint   NOT NULL,
    expires_at_ms bigint   NOT NULL,
    on_expiry     text     NOT NULL,         -- release | charge
    settled_ms    bigint
);
CREATE INDEX eb_hold_due ON @schema@.eb_hold (expires_at_ms, rid) WHERE state = 'held';
CREATE INDEX eb_hold_settled ON @schema@.eb_hold (settled_ms) WHERE state <> 'held';

-- Append-only: the audit and billing feed. 'reserve' rows carry the amounts held, every
-- settle kind (commit, release, expire, expire_charge) the amounts charged.
CREATE TABLE @schema@.eb_event (
    seq      bigserial PRIMARY KEY,
    ts_ms    bigint   NOT NULL,
    kind     text     NOT NULL,
    rid      text     NOT NULL,
    line_ids bigint[] NOT NULL,
    amounts  bigint[] NOT NULL
);

CREATE FUNCTION @schema@.eb_now_ms() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;

-- The keys of a list of line ids, in the same order (for results the client reads).
CREATE FUNCTION @schema@.eb_keys(
    p_ids bigint[], OUT scopes text[], OUT wins text[], OUT dims text[]
) LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(l.scope ORDER BY k.i), '{}'),
           coalesce(array_agg(l.win ORDER BY k.i), '{}'),
           coalesce(array_agg(l.dim ORDER BY k.i), '{}')
      FROM unnest(p_ids) WITH ORDINALITY AS k(id, i)
      JOIN @schema@.eb_line l ON l.id = k.id
$$;

-- reserve: hold p_amounts on every line of the chain, or on none.
-- status: ok | dup (this rid holds) | settled (this rid was settled) | denied (d_* say why)
CREATE FUNCTION @schema@.eb_reserve(
    p_rid text, p_scopes text[], p_wins text[], p_dims text[], p_limits bigint[],
    p_amounts bigint[], p_window_ends bigint[], p_ttl_ms bigint, p_on_expiry text,
    p_charge_now boolean, p_now_ms bigint,
    OUT status text, OUT expires_at_ms bigint, OUT d_index integer, OUT d_limit bigint,
    OUT d_spent bigint, OUT d_held bigint, OUT d_reason text
) LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := coalesce(p_now_ms, @schema@.eb_now_ms());
    v_n   integer := cardinality(p_scopes);
    v_ids bigint[];
    v_new bigint[] := '{}';
    v_seq bigint[];
    v_state text;
BEGIN
    -- 0. A retry of a known rid changes nothing.
    SELECT h.state, h.expires_at_ms INTO v_state, expires_at_ms
      FROM @schema@.eb_hold h WHERE h.rid = p_rid;
    IF FOUND THEN
        status := CASE WHEN v_state = 'held' THEN 'dup' ELSE 'settled' END;
        RETURN;
    END IF;

    -- 1. Check without locking: a chain that cannot grant on the last committed books is
    --    denied at once, writing nothing (so no WAL flush, and no hot row lock held while
    --    a spent budget turns callers away). A grant is checked again under the locks.
    SELECT k.i - 1, coalesce(l.override, k.lim), coalesce(l.spent, 0), coalesce(l.held, 0),
           coalesce(l.blocked, 'limit')
      INTO d_index, d_limit, d_spent, d_held, d_reason
      FROM unnest(p_scopes, p_wins, p_dims, p_limits, p_amounts) WITH ORDINALITY
               AS k(s, w, d, lim, amt, i)
      LEFT JOIN @schema@.eb_line l ON l.scope = k.s AND l.win = k.w AND l.dim = k.d
     WHERE l.blocked IS NOT NULL
        OR coalesce(l.spent, 0)::numeric + coalesce(l.held, 0) + k.amt
           > coalesce(l.override, k.lim)
     ORDER BY k.i
     LIMIT 1;
    IF FOUND THEN
        status := 'denied';
        RETURN;
    END IF;

    -- 2. The chain's line ids, in chain order. Lines seen for the first time are created
    --    sorted by key, so two creators of overlapping chains wait on each other in one
    --    order; a creator waits for a concurrent creator's commit (ON CONFLICT), then
    --    reads the line it made.
    SELECT array_agg(l.id ORDER BY k.i) INTO v_ids
      FROM unnest(p_scopes, p_wins, p_dims) WITH ORDINALITY AS k(s, w, d, i)
      JOIN @schema@.eb_line l ON l.scope = k.s AND l.win = k.w AND l.dim = k.d;
    IF coalesce(cardinality(v_ids), 0) < v_n THEN
        WITH ins AS (
            INSERT INTO @schema@.eb_line (scope, win, dim, lim, window_end_ms)
            SELECT k.s, k.w, k.d, k.l, k.e
              FROM unnest(p_scopes, p_wins, p_dims, p_limits, p_window_ends) AS k(s, w, d, l, e)
             ORDER BY k.s, k.w, k.d
            ON CONFLICT (scope, win, dim) DO NOTHING
            RETURNING id
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_new FROM ins;
        SELECT array_agg(l.id ORDER BY k.i) INTO v_ids
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
    WITH ev AS (
        INSERT INTO @schema@.eb_event (ts_ms, kind, rid, line_ids, amounts)
        SELECT v_now, k.kind, p_rid, v_ids, p_amounts
          FROM unnest(CASE WHEN p_charge_now THEN ARRAY['reserve', 'commit']
                           ELSE ARRAY['reserve'] END) WITH ORDINALITY AS k(kind, i)
         ORDER BY k.i
        RETURNING seq
    )
    SELECT array_agg(seq) INTO v_seq FROM ev;

    -- 4. Lock the chain in the one global order.
    PERFORM 1 FROM @schema@.eb_line WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;

    -- 5. Check every line again, in chain order; the first that cannot grant denies.
    --    (A new statement: READ COMMITTED reads the lines as their last holders left them.)
    SELECT k.i - 1, coalesce(l.override, k.lim), l.spent, l.held, coalesce(l.blocked, 'limit')
      INTO d_index, d_limit, d_spent, d_held, d_reason
      FROM unnest(v_ids, p_limits, p_amounts) WITH ORDINALITY AS k(id, lim, amt, i)
      JOIN @schema@.eb_line l ON l.id = k.id
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

    -- 6. Apply to every line. The policy's limit is stored; an override still wins.
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

-- Settle one held reservation whose row the caller has locked: charge, free the hold,
-- record the state and the event. Returns the charge per line, in chain order.
CREATE FUNCTION @schema@.eb_apply(
    p_hold @schema@.eb_hold, p_mode text, p_dims text[], p_actual bigint[], p_now bigint
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    v_charged bigint[];
BEGIN
    -- What each line is charged: commit charges actual[dimension] (an omitted dimension
    -- in full), expire_charge the whole hold, release and expire nothing.
    SELECT array_agg(CASE p_mode
                         WHEN 'commit' THEN coalesce(a.v, k.amt)
                         WHEN 'expire_charge' THEN k.amt
                         ELSE 0
                     END ORDER BY k.i)
      INTO v_charged
      FROM unnest(p_hold.line_ids, p_hold.amounts) WITH ORDINALITY AS k(id, amt, i)
      JOIN @schema@.eb_line l ON l.id = k.id
      LEFT JOIN unnest(p_dims, p_actual) AS a(d, v) ON a.d = l.dim;

    UPDATE @schema@.eb_hold
       SET state = CASE p_mode
                       WHEN 'commit' THEN 'committed'
                       WHEN 'release' THEN 'released'
                       WHEN 'expire' THEN 'expired'
                       ELSE 'expire_charge'
                   END,
           charged = v_charged,
           settled_ms = p_now
     WHERE rid = p_hold.rid;
    INSERT INTO @schema@.eb_event (ts_ms, kind, rid, line_ids, amounts)
    VALUES (p_now, p_mode, p_hold.rid, p_hold.line_ids, v_charged);

    -- Lines last: the hot row locks are held only from here to the commit.
    PERFORM 1 FROM @schema@.eb_line WHERE id = ANY (p_hold.line_ids) ORDER BY id FOR UPDATE;
    UPDATE @schema@.eb_line l
       SET held = l.held - k.amt,
           spent = l.spent + k.c,
           overrun = l.overrun + greatest(k.c - k.amt, 0),
           blocked = CASE WHEN k.c > k.amt THEN coalesce(l.blocked, 'overrun') ELSE l.blocked END
      FROM unnest(p_hold.line_ids, p_hold.amounts, v_charged) AS k(id, amt, c)
     WHERE l.id = k.id;
    RETURN v_charged;
END
$$;

-- settle: at most once. status: ok | overrun | settled (charged = the earlier charge) | unknown
CREATE FUNCTION @schema@.eb_settle(
    p_rid text, p_mode text, p_dims text[], p_actual bigint[], p_now_ms bigint,
    OUT status text, OUT scopes text[], OUT wins text[], OUT dims text[], OUT charged bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_hold @schema@.eb_hold;
BEGIN
    SELECT * INTO v_hold FROM @schema@.eb_hold WHERE rid = p_rid FOR UPDATE;
    IF NOT FOUND THEN
        status := 'unknown';
        RETURN;
    END IF;
    SELECT k.scopes, k.wins, k.dims INTO scopes, wins, dims FROM @schema@.eb_keys(v_hold.line_ids) k;
    IF v_hold.state <> 'held' THEN
        status := 'settled';
        charged := coalesce(v_hold.charged, '{}');
        RETURN;
    END IF;
    charged := @schema@.eb_apply(v_hold, p_mode, p_dims, p_actual,
                                 coalesce(p_now_ms, @schema@.eb_now_ms()));
    status := CASE
                  WHEN EXISTS (SELECT 1 FROM unnest(charged, v_hold.amounts) AS k(c, a) WHERE k.c > k.a)
                  THEN 'overrun'
                  ELSE 'ok'
              END;
END
$$;

-- reap: settle up to p_limit holds past their deadline, oldest first, each by its
-- on_expiry. SKIP LOCKED: reapers never wait on each other or on a settle in flight.
-- All their lines are locked in the global order before any is written.
CREATE FUNCTION @schema@.eb_reap(p_limit integer, p_now_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now  bigint := coalesce(p_now_ms, @schema@.eb_now_ms());
    v_rids text[];
    v_hold @schema@.eb_hold;
    v_done integer := 0;
BEGIN
    SELECT array_agg(d.rid ORDER BY d.expires_at_ms, d.rid) INTO v_rids
      FROM (SELECT h.rid, h.expires_at_ms
              FROM @schema@.eb_hold h
             WHERE h.state = 'held' AND h.expires_at_ms <= v_now
             ORDER BY h.expires_at_ms, h.rid
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) d;
    IF v_rids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM @schema@.eb_line
      WHERE id IN (SELECT unnest(h.line_ids) FROM @schema@.eb_hold h WHERE h.rid = ANY (v_rids))
      ORDER BY id FOR UPDATE;
    FOR v_hold IN
        SELECT * FROM @schema@.eb_hold WHERE rid = ANY (v_rids) ORDER BY expires_at_ms, rid
    LOOP
        PERFORM @schema@.eb_apply(v_hold,
                                  CASE WHEN v_hold.on_expiry = 'charge' THEN 'expire_charge'
                                       ELSE 'expire' END,
                                  NULL, NULL, v_now);
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END
$$;
