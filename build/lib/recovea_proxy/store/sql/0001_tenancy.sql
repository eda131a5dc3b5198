-- Workspaces (tenants), their projects and teams, rcv_ keys and provider keys.
-- Every customer row carries customer_id; row-level security is ENABLEd and
-- FORCEd, and the gateway connects as recovea_app, which owns nothing and
-- cannot bypass RLS. A transaction sees a workspace's rows only after
-- set_config('recovea.customer_id', <id>, true); with no scope it sees none.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recovea_app') THEN
    CREATE ROLE recovea_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS recovea;
GRANT USAGE ON SCHEMA recovea TO recovea_app;

-- The scope of the current transaction ('' when unset, which matches no row).
CREATE FUNCTION recovea.current_customer() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT NULLIF(current_setting('recovea.customer_id', true), '')::uuid
$$;

CREATE TABLE recovea.workspaces (
  customer_id     uuid PRIMARY KEY,
  name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  plan            text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro')),
  retention_days  integer CHECK (retention_days IS NULL OR retention_days BETWEEN 1 AND 3650),
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workspaces_name ON recovea.workspaces (name);

CREATE TABLE recovea.projects (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (customer_id, name)
);

CREATE TABLE recovea.teams (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (customer_id, name)
);

CREATE TABLE recovea.rcv_keys (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  project_id   uuid REFERENCES recovea.projects ON DELETE SET NULL,
  team_id      uuid REFERENCES recovea.teams ON DELETE SET NULL,
  role         text NOT NULL CHECK (role IN ('admin', 'member')),
  env          text NOT NULL CHECK (env IN ('live', 'test')),
  key_sha256   bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
  last_four    text NOT NULL CHECK (length(last_four) = 4),
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE INDEX rcv_keys_customer ON recovea.rcv_keys (customer_id);

CREATE TABLE recovea.provider_keys (
  id               uuid PRIMARY KEY,
  customer_id      uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  provider         text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'openrouter')),
  ciphertext       bytea NOT NULL,
  nonce            bytea NOT NULL,
  wrapped_data_key bytea NOT NULL,
  master_key_id    text NOT NULL,
  backend          text NOT NULL CHECK (backend IN ('local', 'kms')),
  last_four        text NOT NULL CHECK (length(last_four) = 4),
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (customer_id, provider)
);

-- Key resolution happens before any scope is known: a SECURITY DEFINER function
-- (owned by the migration role) returns the one row matching a hash, nothing else.
CREATE FUNCTION recovea.resolve_rcv_key(hash bytea)
RETURNS TABLE (id uuid, customer_id uuid, project_id uuid, team_id uuid, role text, env text,
               project text, team text, revoked boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = recovea, pg_temp AS $$
  SELECT k.id, k.customer_id, k.project_id, k.team_id, k.role, k.env, p.name, t.name,
         k.revoked_at IS NOT NULL
  FROM recovea.rcv_keys k
  LEFT JOIN recovea.projects p ON p.id = k.project_id
  LEFT JOIN recovea.teams t ON t.id = k.team_id
  WHERE k.key_sha256 = hash
$$;
REVOKE ALL ON FUNCTION recovea.resolve_rcv_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recovea.resolve_rcv_key(bytea) TO recovea_app;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['workspaces', 'projects', 'teams', 'rcv_keys', 'provider_keys'] LOOP
    EXECUTE format('ALTER TABLE recovea.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE recovea.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON recovea.%I USING (customer_id = recovea.current_customer())'
      ' WITH CHECK (customer_id = recovea.current_customer())', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.%I TO recovea_app', t);
  END LOOP;
END
$$;
