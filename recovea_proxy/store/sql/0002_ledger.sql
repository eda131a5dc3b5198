-- The body-free ledger: one request_events row per request (partitioned by day),
-- the routes it points at, signed receipts, receipt signing keys, per-workspace
-- price overrides and the hourly usage rollups.
--
-- Tenant rows keep the tenancy rule (RLS FORCEd, scoped by recovea.customer_id).
-- The gateway's own service work spans workspaces (the drainer writes a batch of
-- many workspaces' events; rollup and retention read and delete across them): it
-- declares itself with set_config('recovea.service', 'on', true) inside its
-- transaction, and a second policy admits exactly that. Request handlers never set it.

CREATE FUNCTION recovea.service_mode() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('recovea.service', true), '') = 'on'
$$;

CREATE TABLE recovea.routes (
  route_id     uuid PRIMARY KEY,
  customer_id  uuid NOT NULL,
  provider     text NOT NULL,
  path         text NOT NULL,
  first_model  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (customer_id, provider, path)
);

CREATE TABLE recovea.request_events (
  request_id            uuid NOT NULL,
  trace_id              text NOT NULL,
  customer_id           uuid,
  project_id            uuid,
  team_id               uuid,
  rcv_key_id            uuid,
  route_id              uuid,
  feature               text,
  end_user_id           text,
  baseline_model        text,
  realized_model        text,
  input_tokens          integer,
  output_tokens         integer,
  cached_tokens         integer,
  reasoning_tokens      integer,
  levers_fired          jsonb NOT NULL DEFAULT '{}',
  cache_hit             boolean NOT NULL DEFAULT false,
  cache_type            text,
  dedup_singleflight    boolean NOT NULL DEFAULT false,
  finish_reason         text,
  success               boolean,
  fell_back_to_baseline boolean NOT NULL DEFAULT false,
  status                text NOT NULL CHECK (status IN ('success', 'error')),
  latency_total_ms      double precision NOT NULL,
  gateway_overhead_ms   double precision NOT NULL,
  provider              text NOT NULL,
  env                   text CHECK (env IN ('live', 'test')),
  ts                    timestamptz NOT NULL,
  baseline_cost         numeric CHECK (baseline_cost IS NULL),
  realized_cost         numeric CHECK (realized_cost IS NULL),
  PRIMARY KEY (request_id, ts)
) PARTITION BY RANGE (ts);

-- Rows whose day has no partition yet land here; ensure_event_partition moves them.
CREATE TABLE recovea.request_events_default PARTITION OF recovea.request_events DEFAULT;
CREATE INDEX request_events_customer_ts ON recovea.request_events (customer_id, ts);

-- Creates the partition for one UTC day (idempotent). Rows of that day already in
-- the default partition are moved into it first, so nothing is lost.
CREATE FUNCTION recovea.ensure_event_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  name text := format('request_events_%s', to_char(day, 'YYYYMMDD'));
  lo timestamptz := (day::timestamp AT TIME ZONE 'UTC');
  hi timestamptz := ((day + 1)::timestamp AT TIME ZONE 'UTC');
BEGIN
  IF to_regclass('recovea.' || name) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE recovea.%I (LIKE recovea.request_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
  EXECUTE format(
    'WITH moved AS (DELETE FROM recovea.request_events_default WHERE ts >= $1 AND ts < $2 RETURNING *)'
    ' INSERT INTO recovea.%I SELECT * FROM moved', name) USING lo, hi;
  EXECUTE format('ALTER TABLE recovea.request_events ATTACH PARTITION recovea.%I FOR VALUES FROM (%L) TO (%L)',
                 name, lo, hi);
  RETURN true;
END
$$;

-- Drops whole day partitions that end before the cutoff; returns their names.
CREATE FUNCTION recovea.drop_event_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  part record;
BEGIN
  FOR part IN
    SELECT c.relname
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = 'recovea' AND p.relname = 'request_events'
      AND c.relname ~ '^request_events_[0-9]{8}$'
      AND (to_date(substr(c.relname, 16), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
  LOOP
    EXECUTE format('DROP TABLE recovea.%I', part.relname);
    RETURN NEXT part.relname;
  END LOOP;
END
$$;

CREATE TABLE recovea.receipts (
  chain_id     text NOT NULL,
  seq          bigint NOT NULL CHECK (seq >= 1),
  request_id   uuid NOT NULL,
  customer_id  uuid NOT NULL,
  kid          text NOT NULL,
  ts           timestamptz NOT NULL,
  token        text NOT NULL,
  PRIMARY KEY (chain_id, seq)
);
CREATE INDEX receipts_customer_request ON recovea.receipts (customer_id, request_id);
CREATE INDEX receipts_customer_ts ON recovea.receipts (customer_id, ts);

-- Receipt signing keys: not tenant data. The private key is sealed like a provider
-- key (AES-256-GCM data key wrapped by the master key); the public key is published.
CREATE TABLE recovea.receipt_keys (
  kid              text PRIMARY KEY,
  public_key       bytea NOT NULL CHECK (length(public_key) = 32),
  ciphertext       bytea NOT NULL,
  nonce            bytea NOT NULL,
  wrapped_data_key bytea NOT NULL,
  master_key_id    text NOT NULL,
  backend          text NOT NULL CHECK (backend IN ('local', 'kms')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  retired_at       timestamptz
);
-- At most one key signs at a time.
CREATE UNIQUE INDEX receipt_keys_one_active ON recovea.receipt_keys ((true)) WHERE retired_at IS NULL;
GRANT SELECT, INSERT ON recovea.receipt_keys TO recovea_app;

CREATE TABLE recovea.model_prices (
  customer_id   uuid NOT NULL,
  model         text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
  input         numeric NOT NULL CHECK (input >= 0),
  cached_input  numeric NOT NULL CHECK (cached_input >= 0),
  output        numeric NOT NULL CHECK (output >= 0),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, model)
);

CREATE TABLE recovea.usage_rollups (
  hour             timestamptz NOT NULL,
  customer_id      uuid NOT NULL,
  project_id       uuid,
  team_id          uuid,
  feature          text,
  end_user_id      text,
  route_id         uuid,
  provider         text NOT NULL,
  baseline_model   text,
  realized_model   text,
  requests         bigint NOT NULL,
  errors           bigint NOT NULL,
  input_tokens     bigint NOT NULL,
  output_tokens    bigint NOT NULL,
  cached_tokens    bigint NOT NULL,
  reasoning_tokens bigint NOT NULL,
  cache_hits       bigint NOT NULL,
  dedup_hits       bigint NOT NULL,
  fallbacks        bigint NOT NULL,
  baseline_cost    numeric,
  realized_cost    numeric,
  unpriced         bigint NOT NULL DEFAULT 0
);
CREATE INDEX usage_rollups_customer_hour ON recovea.usage_rollups (customer_id, hour);
CREATE INDEX usage_rollups_hour ON recovea.usage_rollups (hour);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['routes', 'request_events', 'receipts', 'model_prices', 'usage_rollups'] LOOP
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

-- Service work reads workspaces too (plans and retention for rollup and prune; the
-- passthrough workspace at startup).
CREATE POLICY service_access ON recovea.workspaces USING (recovea.service_mode())
  WITH CHECK (recovea.service_mode());

-- Today's and tomorrow's partitions exist from the start; the gateway's maintenance
-- task keeps creating them ahead.
SELECT recovea.ensure_event_partition((now() AT TIME ZONE 'UTC')::date);
SELECT recovea.ensure_event_partition((now() AT TIME ZONE 'UTC')::date + 1);

-- Hours that received events since their last rollup (the drainer marks them in the
-- same transaction as the events; the rollup takes them). Not tenant data.
CREATE TABLE recovea.rollup_pending (
  hour timestamptz PRIMARY KEY
);
GRANT SELECT, INSERT, DELETE ON recovea.rollup_pending TO recovea_app;
