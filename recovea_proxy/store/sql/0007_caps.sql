-- Hard spend caps (`recovea cap set`): a USD amount per workspace, project, team or
-- rcv_ key, per UTC day or month, and the state the gateways keep them with.
--
-- spend_caps        the caps as set (one per scope; disabled caps are kept)
-- spend_cap_options per workspace: the fallback price for unpriced models and the
--                   amount reserved for a path the gateway cannot meter (NULL: refused)
-- spend_cap_state   per cap and period: spent (settled, priced usage folded in by the
--                   gateways) and leased (budget carved out by gateway processes and
--                   not yet folded); spent + leased <= usd is kept by every carve
-- spend_cap_leases  one row per (cap, period, gateway process): its share of leased,
--                   what it had in flight at its last sync, and when it expires
--
-- Amounts are numeric USD. Every row carries customer_id with the usual row-level
-- security (tenant scope, or the gateway's service mode to load every cap at start).

CREATE TABLE recovea.spend_caps (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  scope        text NOT NULL CHECK (scope IN ('workspace', 'project', 'team', 'key')),
  -- the workspace's own id for scope 'workspace', else the project, team or key id
  scope_id     uuid NOT NULL,
  usd          numeric(20, 6) NOT NULL CHECK (usd >= 0 AND usd <= 1000000000),
  period       text NOT NULL CHECK (period IN ('day', 'month')),
  on_overrun   text NOT NULL CHECK (on_overrun IN ('finish', 'cut')),
  enabled      boolean NOT NULL DEFAULT true,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (customer_id, scope, scope_id),
  CHECK (scope <> 'workspace' OR scope_id = customer_id)
);

CREATE TABLE recovea.spend_cap_options (
  customer_id            uuid PRIMARY KEY REFERENCES recovea.workspaces ON DELETE CASCADE,
  -- USD per 1M tokens for a model with no known price (both or neither)
  fallback_input         numeric(20, 6) CHECK (fallback_input BETWEEN 0 AND 1000000),
  fallback_output        numeric(20, 6) CHECK (fallback_output BETWEEN 0 AND 1000000),
  -- USD reserved (and charged) per request on a path the gateway cannot meter
  unmetered_reserve      numeric(20, 6) CHECK (unmetered_reserve BETWEEN 0 AND 1000000),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  CHECK ((fallback_input IS NULL) = (fallback_output IS NULL))
);

CREATE TABLE recovea.spend_cap_state (
  cap_id        uuid NOT NULL REFERENCES recovea.spend_caps ON DELETE CASCADE,
  customer_id   uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  period_start  timestamptz NOT NULL,
  spent         numeric NOT NULL DEFAULT 0 CHECK (spent >= 0),
  leased        numeric NOT NULL DEFAULT 0 CHECK (leased >= 0),
  PRIMARY KEY (cap_id, period_start)
);

CREATE TABLE recovea.spend_cap_leases (
  cap_id        uuid NOT NULL,
  customer_id   uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  period_start  timestamptz NOT NULL,
  holder        text NOT NULL CHECK (length(holder) BETWEEN 1 AND 100),
  amount        numeric NOT NULL CHECK (amount >= 0),
  held          numeric NOT NULL DEFAULT 0 CHECK (held >= 0),
  expires_at    timestamptz NOT NULL,
  PRIMARY KEY (cap_id, period_start, holder),
  FOREIGN KEY (cap_id, period_start) REFERENCES recovea.spend_cap_state ON DELETE CASCADE
);
CREATE INDEX spend_cap_leases_expiry ON recovea.spend_cap_leases (expires_at);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['spend_caps', 'spend_cap_options', 'spend_cap_state',
                           'spend_cap_leases'] LOOP
    EXECUTE format('ALTER TABLE recovea.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE recovea.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON recovea.%I USING (customer_id = recovea.current_customer())'
      ' WITH CHECK (customer_id = recovea.current_customer())', t);
    EXECUTE format(
      'CREATE POLICY service_access ON recovea.%I USING (recovea.service_mode())'
      ' WITH CHECK (recovea.service_mode())', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.%I TO recovea_app', t);
  END LOOP;
END
$$;

-- One gateway process's lease of one cap in one period, in one round trip. It scopes
-- its transaction to the cap's workspace and runs as the caller (RLS applies).
-- Every writer takes the period's state row first, then leases (no deadlocks).
--
--   1. the state row of the period exists, and is locked;
--   2. the period's expired leases are reclaimed: what each had in flight at its last
--      sync counts as spent (its requests may have been billed), the rest is free;
--   3. `consumed` (settled spend since the holder's last sync) moves from its lease
--      to spent, and `held` records what it has in flight now;
--   4. the lease is resized: grown by `want` - amount (or, when the room left
--      cannot take that, by `need` alone) — each try one atomic conditional UPDATE
--      (`leased = leased + slice WHERE spent + leased + slice <= usd`), so spent +
--      leased <= usd whatever runs at once — or shrunk to `want` (the unused part
--      is given back);
--   5. it expires `ttl_s` from now unless synced again.
--
-- Returns the lease's amount now, whether `need` was carved, and the state.
CREATE FUNCTION recovea.spend_cap_lease(
  p_cap uuid, p_customer uuid, p_period timestamptz, p_holder text,
  p_consumed numeric, p_held numeric, p_need numeric, p_want numeric, p_ttl_s double precision
) RETURNS TABLE (amount numeric, carved boolean, usd numeric, spent numeric, leased numeric)
LANGUAGE plpgsql AS $$
DECLARE
  v_usd numeric;
  v_amount numeric;
  v_gone_amount numeric;
  v_gone_held numeric;
  v_slice numeric;
  v_carved boolean := p_need <= 0;
BEGIN
  PERFORM set_config('recovea.customer_id', p_customer::text, true);
  SELECT c.usd INTO v_usd FROM recovea.spend_caps c WHERE c.id = p_cap AND c.enabled;
  IF v_usd IS NULL THEN
    v_usd := 0;  -- disabled or gone: nothing is carved, everything unused goes back
    p_want := 0;
    p_need := 0;
    v_carved := false;
  END IF;
  INSERT INTO recovea.spend_cap_state AS s (cap_id, customer_id, period_start)
    SELECT p_cap, p_customer, p_period
    WHERE EXISTS (SELECT 1 FROM recovea.spend_caps c WHERE c.id = p_cap)
  ON CONFLICT DO NOTHING;
  PERFORM 1 FROM recovea.spend_cap_state s
    WHERE s.cap_id = p_cap AND s.period_start = p_period FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;  -- the cap is gone
  END IF;
  WITH gone AS (
    DELETE FROM recovea.spend_cap_leases l
    WHERE l.cap_id = p_cap AND l.period_start = p_period AND l.expires_at < now()
    RETURNING l.amount, least(l.held, l.amount) AS held
  )
  SELECT coalesce(sum(g.amount), 0), coalesce(sum(g.held), 0)
    INTO v_gone_amount, v_gone_held FROM gone g;
  SELECT l.amount INTO v_amount FROM recovea.spend_cap_leases l
    WHERE l.cap_id = p_cap AND l.period_start = p_period AND l.holder = p_holder;
  -- A holder whose lease expired under it starts again from nothing; what it
  -- consumed meanwhile is spent all the same.
  v_amount := coalesce(v_amount, 0);
  UPDATE recovea.spend_cap_state s
    SET spent = s.spent + v_gone_held + p_consumed,
        leased = greatest(s.leased - v_gone_amount - least(p_consumed, v_amount), 0)
    WHERE s.cap_id = p_cap AND s.period_start = p_period;
  v_amount := greatest(v_amount - p_consumed, 0);
  IF p_want > v_amount OR p_need > 0 THEN
    FOREACH v_slice IN ARRAY ARRAY[greatest(p_want - v_amount, p_need), p_need] LOOP
      CONTINUE WHEN v_slice <= 0;
      UPDATE recovea.spend_cap_state s SET leased = s.leased + v_slice
        WHERE s.cap_id = p_cap AND s.period_start = p_period
          AND s.spent + s.leased + v_slice <= v_usd;
      IF FOUND THEN
        v_amount := v_amount + v_slice;
        v_carved := true;
        EXIT;
      END IF;
    END LOOP;
  ELSIF p_want < v_amount THEN
    UPDATE recovea.spend_cap_state s SET leased = greatest(s.leased - (v_amount - p_want), 0)
      WHERE s.cap_id = p_cap AND s.period_start = p_period;
    v_amount := p_want;
  END IF;
  IF v_amount > 0 OR p_held > 0 THEN
    INSERT INTO recovea.spend_cap_leases AS l
      (cap_id, customer_id, period_start, holder, amount, held, expires_at)
    VALUES (p_cap, p_customer, p_period, p_holder, v_amount, p_held,
            now() + make_interval(secs => p_ttl_s))
    ON CONFLICT (cap_id, period_start, holder) DO UPDATE
      SET amount = EXCLUDED.amount, held = EXCLUDED.held, expires_at = EXCLUDED.expires_at;
  ELSE
    DELETE FROM recovea.spend_cap_leases l
      WHERE l.cap_id = p_cap AND l.period_start = p_period AND l.holder = p_holder;
  END IF;
  RETURN QUERY SELECT v_amount, v_carved, v_usd, s.spent, s.leased
    FROM recovea.spend_cap_state s WHERE s.cap_id = p_cap AND s.period_start = p_period;
END
$$;
REVOKE ALL ON FUNCTION recovea.spend_cap_lease(uuid, uuid, timestamptz, text, numeric, numeric,
  numeric, numeric, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recovea.spend_cap_lease(uuid, uuid, timestamptz, text, numeric,
  numeric, numeric, numeric, double precision) TO recovea_app;

-- Every expired lease, reclaimed by maintenance (service mode, or the owner): as in
-- spend_cap_lease, what it had in flight counts as spent and the rest is free again.
-- State row first, then its leases, like every other writer. How many it reclaimed.
CREATE FUNCTION recovea.spend_cap_reclaim() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_amount numeric;
  v_held numeric;
  v_count integer := 0;
  v_n integer;
BEGIN
  FOR r IN SELECT DISTINCT l.cap_id, l.period_start FROM recovea.spend_cap_leases l
           WHERE l.expires_at < now() LOOP
    PERFORM 1 FROM recovea.spend_cap_state s
      WHERE s.cap_id = r.cap_id AND s.period_start = r.period_start FOR UPDATE;
    WITH gone AS (
      DELETE FROM recovea.spend_cap_leases l
      WHERE l.cap_id = r.cap_id AND l.period_start = r.period_start AND l.expires_at < now()
      RETURNING l.amount, least(l.held, l.amount) AS held
    )
    SELECT coalesce(sum(g.amount), 0), coalesce(sum(g.held), 0), count(*)
      INTO v_amount, v_held, v_n FROM gone g;
    UPDATE recovea.spend_cap_state s
      SET leased = greatest(s.leased - v_amount, 0), spent = s.spent + v_held
      WHERE s.cap_id = r.cap_id AND s.period_start = r.period_start;
    v_count := v_count + v_n;
  END LOOP;
  RETURN v_count;
END
$$;
