-- Rate and concurrency limits (`recovea limit set`, `/admin/v1/limits`): per workspace,
-- scoped to the whole workspace, a project, a team or one rcv_ key, optionally to one
-- requested model; each of rpm, tpm and concurrency optional. fail_closed: what the
-- gateway does when the limit's counters (Redis) cannot be reached (false: admit).
--
-- Tenant rows keep the tenancy rule (RLS FORCEd, scoped by recovea.customer_id); the
-- gateway reads every workspace's limits at once in service mode (see 0002), and
-- hears changes on the channel `recovea_limits_changed` (payload: the workspace id).

CREATE TABLE recovea.rate_limits (
  id           uuid PRIMARY KEY,
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  scope        text NOT NULL CHECK (scope IN ('workspace', 'project', 'team', 'key')),
  project_id   uuid REFERENCES recovea.projects ON DELETE CASCADE,
  team_id      uuid REFERENCES recovea.teams ON DELETE CASCADE,
  rcv_key_id   uuid REFERENCES recovea.rcv_keys ON DELETE CASCADE,
  -- '' applies to every model; otherwise the model the caller asked for
  model        text NOT NULL DEFAULT '' CHECK (length(model) <= 256),
  rpm          integer CHECK (rpm IS NULL OR rpm BETWEEN 1 AND 1000000000),
  tpm          bigint CHECK (tpm IS NULL OR tpm BETWEEN 1 AND 1000000000000),
  concurrency  integer CHECK (concurrency IS NULL OR concurrency BETWEEN 1 AND 1000000),
  fail_closed  boolean NOT NULL DEFAULT false,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT rate_limits_scope_target CHECK (
    (scope = 'workspace' AND project_id IS NULL AND team_id IS NULL AND rcv_key_id IS NULL)
    OR (scope = 'project' AND project_id IS NOT NULL AND team_id IS NULL AND rcv_key_id IS NULL)
    OR (scope = 'team' AND team_id IS NOT NULL AND project_id IS NULL AND rcv_key_id IS NULL)
    OR (scope = 'key' AND rcv_key_id IS NOT NULL AND project_id IS NULL AND team_id IS NULL)),
  CONSTRAINT rate_limits_something CHECK (
    rpm IS NOT NULL OR tpm IS NOT NULL OR concurrency IS NOT NULL)
);
-- one limit per scope and model
CREATE UNIQUE INDEX rate_limits_one_per_scope ON recovea.rate_limits (
  customer_id, scope,
  coalesce(project_id, team_id, rcv_key_id, '00000000-0000-0000-0000-000000000000'::uuid),
  model);

ALTER TABLE recovea.rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.rate_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.rate_limits
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
CREATE POLICY service_access ON recovea.rate_limits
  USING (recovea.service_mode()) WITH CHECK (recovea.service_mode());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.rate_limits TO recovea_app;
