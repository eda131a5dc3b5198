-- Routing rules (`recovea route add|list|remove`, `/admin/v1/routes`): requests of a
-- workspace that match (surface, path, model, feature, env; NULL matches anything but
-- the model) are served on `to_model` (on `provider`, NULL: the request's own), then
-- each of `fallbacks`, then the caller's model. `shadow_rate` is the share of them
-- shadow evaluation samples (stored for it; 0 = off).
--
-- The key lookup reads a workspace's rules with its key (`workspace_routes`), so a
-- change sends the keys' revocation notice, as the lever policy does.

CREATE TABLE recovea.route_rules (
  id             uuid PRIMARY KEY,
  customer_id    uuid NOT NULL REFERENCES recovea.workspaces ON DELETE CASCADE,
  match_surface  text CHECK (match_surface IN ('openai', 'anthropic', 'openrouter')),
  match_path     text CHECK (length(match_path) BETWEEN 1 AND 256),
  match_model    text NOT NULL CHECK (length(match_model) BETWEEN 1 AND 256),
  feature        text CHECK (length(feature) BETWEEN 1 AND 128),
  env            text CHECK (env IN ('live', 'test')),
  provider       text CHECK (provider IN ('openai', 'anthropic', 'openrouter')),
  to_model       text NOT NULL CHECK (length(to_model) BETWEEN 1 AND 256),
  fallbacks      text[] NOT NULL DEFAULT '{}' CHECK (cardinality(fallbacks) <= 8),
  shadow_rate    double precision NOT NULL DEFAULT 0
                   CHECK (shadow_rate >= 0 AND shadow_rate <= 1),
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX route_rules_customer ON recovea.route_rules (customer_id, created_at);
-- One rule per match: two rules that match the same requests would make the order of
-- writing decide which serves.
CREATE UNIQUE INDEX route_rules_match ON recovea.route_rules (
  customer_id, coalesce(match_surface, ''), coalesce(match_path, ''), match_model,
  coalesce(feature, ''), coalesce(env, '')
);

ALTER TABLE recovea.route_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.route_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.route_rules
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.route_rules TO recovea_app;

-- A workspace's rules for the key lookup, which runs before any scope is known: a
-- SECURITY DEFINER function returning that one workspace's rules, oldest first.
CREATE FUNCTION recovea.workspace_routes(workspace uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = recovea, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', r.id, 'match_surface', r.match_surface, 'match_path', r.match_path,
           'match_model', r.match_model, 'feature', r.feature, 'env', r.env,
           'provider', r.provider, 'to', r.to_model, 'fallbacks', to_jsonb(r.fallbacks),
           'shadow', r.shadow_rate) ORDER BY r.created_at, r.id), '[]'::jsonb)
  FROM recovea.route_rules r
  WHERE r.customer_id = workspace
$$;
REVOKE ALL ON FUNCTION recovea.workspace_routes(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recovea.workspace_routes(uuid) TO recovea_app;
