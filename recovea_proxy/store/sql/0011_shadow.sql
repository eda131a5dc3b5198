-- Shadow evaluation (opt-in per routing rule: `route_rules.shadow_rate`): counts only,
-- never a body. The gateway's shadow workers add to these rows off the hot path.
--
-- `shadow_stats`: per rule and model pair (the model that served, the caller's model),
-- how many answers were compared and how many disagreed, and the sequential test's
-- verdict once it has one. `shadow_spend`: what the workspace's shadow calls to the
-- baseline model cost, per UTC day (the spend ceiling reads it). A rule that the
-- test finds inferior is disabled: `disabled_at` and `disabled_reason` are set, and
-- the key lookup no longer returns it (traffic goes back to the caller's model).

ALTER TABLE recovea.route_rules
  ADD COLUMN disabled_at timestamptz,
  ADD COLUMN disabled_reason text CHECK (length(disabled_reason) BETWEEN 1 AND 256);

CREATE TABLE recovea.shadow_stats (
  customer_id     uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  rule_id         uuid NOT NULL REFERENCES recovea.route_rules ON DELETE CASCADE,
  routed_model    text NOT NULL CHECK (length(routed_model) BETWEEN 1 AND 256),
  baseline_model  text NOT NULL CHECK (length(baseline_model) BETWEEN 1 AND 256),
  n               bigint NOT NULL DEFAULT 0 CHECK (n >= 0),
  disagreements   bigint NOT NULL DEFAULT 0 CHECK (disagreements BETWEEN 0 AND n),
  verdict         text CHECK (verdict IN ('inferior', 'non_inferior')),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (rule_id, routed_model, baseline_model)
);
CREATE INDEX shadow_stats_customer ON recovea.shadow_stats (customer_id);

CREATE TABLE recovea.shadow_spend (
  customer_id  uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  day          date NOT NULL,
  usd          numeric NOT NULL DEFAULT 0 CHECK (usd >= 0),
  calls        bigint NOT NULL DEFAULT 0 CHECK (calls >= 0),
  PRIMARY KEY (customer_id, day)
);

ALTER TABLE recovea.shadow_stats ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.shadow_stats FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.shadow_stats
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.shadow_stats TO recovea_app;

ALTER TABLE recovea.shadow_spend ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.shadow_spend FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.shadow_spend
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.shadow_spend TO recovea_app;

-- The key lookup's rules: a disabled rule is left out.
CREATE OR REPLACE FUNCTION recovea.workspace_routes(workspace uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = recovea, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', r.id, 'match_surface', r.match_surface, 'match_path', r.match_path,
           'match_model', r.match_model, 'feature', r.feature, 'env', r.env,
           'provider', r.provider, 'to', r.to_model, 'fallbacks', to_jsonb(r.fallbacks),
           'shadow', r.shadow_rate) ORDER BY r.created_at, r.id), '[]'::jsonb)
  FROM recovea.route_rules r
  WHERE r.customer_id = workspace AND r.disabled_at IS NULL
$$;
