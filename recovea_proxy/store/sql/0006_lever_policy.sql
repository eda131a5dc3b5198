-- A workspace's lever policy (`recovea cache set`): the exact cache and singleflight.
-- The key lookup returns it with the key, so a request needs no second query.

ALTER TABLE recovea.workspaces
  ADD COLUMN cache_policy text NOT NULL DEFAULT 'deterministic'
    CHECK (cache_policy IN ('off', 'deterministic', 'all')),
  ADD COLUMN cache_ttl_s integer NOT NULL DEFAULT 3600
    CHECK (cache_ttl_s BETWEEN 1 AND 2592000),
  ADD COLUMN cache_tool_calls boolean NOT NULL DEFAULT false;

DROP FUNCTION recovea.resolve_rcv_key(bytea);
CREATE FUNCTION recovea.resolve_rcv_key(hash bytea)
RETURNS TABLE (id uuid, customer_id uuid, project_id uuid, team_id uuid, role text, env text,
               project text, team text, revoked boolean,
               cache_policy text, cache_ttl_s integer, cache_tool_calls boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = recovea, pg_temp AS $$
  SELECT k.id, k.customer_id, k.project_id, k.team_id, k.role, k.env, p.name, t.name,
         k.revoked_at IS NOT NULL, w.cache_policy, w.cache_ttl_s, w.cache_tool_calls
  FROM recovea.rcv_keys k
  JOIN recovea.workspaces w ON w.customer_id = k.customer_id
  LEFT JOIN recovea.projects p ON p.id = k.project_id
  LEFT JOIN recovea.teams t ON t.id = k.team_id
  WHERE k.key_sha256 = hash
$$;
REVOKE ALL ON FUNCTION recovea.resolve_rcv_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recovea.resolve_rcv_key(bytea) TO recovea_app;
