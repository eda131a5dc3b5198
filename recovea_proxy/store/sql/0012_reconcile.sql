-- Reconciliation with the providers' own usage reports (`recovea reconcile`).
--
-- report_keys: per workspace and provider, the provider's admin key that can read
-- its usage and cost reports. Sealed exactly like provider_keys (AES-256-GCM under a
-- fresh data key wrapped by the deployment's master key or the workspace's own KMS
-- key); the encryption context adds purpose=report, so a row copied into
-- provider_keys does not open there. Decrypted only by the poller.
--
-- provider_usage: what the provider reported, per workspace, UTC day, provider,
-- model, API key and project: counts and amounts only. A day's rows are replaced
-- whole when it is polled again (no double counting).
--
-- reconcile_days: how the last poll of each (workspace, provider, day) went, and
-- whether the day has settled (the provider's figures no longer move).

CREATE TABLE recovea.report_keys (
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

CREATE TABLE recovea.provider_usage (
  customer_id    uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  provider       text NOT NULL,
  day            date NOT NULL,
  model          text NOT NULL CHECK (length(model) BETWEEN 1 AND 256),
  api_key_id     text NOT NULL DEFAULT '' CHECK (length(api_key_id) <= 256),
  project_id     text NOT NULL DEFAULT '' CHECK (length(project_id) <= 256),
  requests       bigint CHECK (requests IS NULL OR requests >= 0),
  input_tokens   bigint NOT NULL CHECK (input_tokens >= 0),
  cached_tokens  bigint NOT NULL CHECK (cached_tokens >= 0),
  output_tokens  bigint NOT NULL CHECK (output_tokens >= 0),
  cost_usd       numeric,
  PRIMARY KEY (customer_id, provider, day, model, api_key_id, project_id)
);

CREATE TABLE recovea.reconcile_days (
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  provider     text NOT NULL,
  day          date NOT NULL,
  outcome      text NOT NULL CHECK (outcome IN ('ok', 'failed')),
  reason       text CHECK (reason IS NULL OR length(reason) <= 64),
  attempts     integer NOT NULL CHECK (attempts >= 1),
  settled      boolean NOT NULL DEFAULT false,
  polled_at    timestamptz NOT NULL,
  PRIMARY KEY (customer_id, provider, day)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['report_keys', 'provider_usage', 'reconcile_days'] LOOP
    EXECUTE format('ALTER TABLE recovea.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE recovea.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON recovea.%I USING (customer_id = recovea.current_customer())'
      ' WITH CHECK (customer_id = recovea.current_customer())', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.%I TO recovea_app', t);
  END LOOP;
END
$$;
