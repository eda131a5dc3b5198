-- The exact cache's generation per workspace (`recovea cache purge`): part of every
-- cache key, so raising it leaves the workspace's stored answers unreachable at once,
-- in every replica's memory and in Redis alike (they age out by their TTL). The key
-- lookup returns it with the rest of the lever policy.

ALTER TABLE recovea.workspaces
  ADD COLUMN cache_generation integer NOT NULL DEFAULT 0 CHECK (cache_generation >= 0);

DROP FUNCTION recovea.resolve_rcv_key(bytea);
CREATE FUNCTION recovea.resolve_rcv_key(hash bytea)
RETURNS TABLE (id uuid, customer_id uuid, project_id uuid, team_id uuid, role text, env text,
               project text, team text, revoked boolean,
               cache_policy text, cache_ttl_s integer, cache_tool_calls boolean, slim boolean,
               cache_generation integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = recovea, pg_temp AS $$
  SELECT k.id, k.customer_id, k.project_id, k.team_id, k.role, k.env, p.name, t.name,
         k.revoked_at IS NOT NULL, w.cache_policy, w.cache_ttl_s, w.cache_tool_calls, w.slim,
         w.cache_generation
  FROM recovea.rcv_keys k
  JOIN recovea.workspaces w ON w.customer_id = k.customer_id
  LEFT JOIN recovea.projects p ON p.id = k.project_id
  LEFT JOIN recovea.teams t ON t.id = k.team_id
  WHERE k.key_sha256 = hash
$$;
REVOKE ALL ON FUNCTION recovea.resolve_rcv_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recovea.resolve_rcv_key(bytea) TO recovea_app;
