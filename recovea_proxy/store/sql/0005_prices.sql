-- Prices that match the provider's bill. The request row keeps exactly its columns;
-- what the rollup needs beyond them reaches it here:
--
-- * pricing_facts: per request (keyed like request_events), the input written to the
--   prompt cache for 5 minutes and for 1 hour, and the service tier that served when
--   it was not the provider's standard one. The drainer writes a row only for a
--   request that has one of these (in the same transaction as its event); the rollup
--   joins it. Body-free: counts and a tier name. Pruned and deleted with the events.
-- * model_prices: a workspace's override carries every rate the shipped table does.
-- * usage_rollups: the cache writes' sums, beside the other token sums.

CREATE TABLE recovea.pricing_facts (
  request_id             uuid NOT NULL,
  ts                     timestamptz NOT NULL,
  customer_id            uuid NOT NULL,
  cache_write_5m_tokens  integer,
  cache_write_1h_tokens  integer,
  service_tier           text,
  PRIMARY KEY (request_id, ts)
);
CREATE INDEX pricing_facts_customer_ts ON recovea.pricing_facts (customer_id, ts);

ALTER TABLE recovea.pricing_facts ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.pricing_facts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.pricing_facts
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
CREATE POLICY service_access ON recovea.pricing_facts
  USING (recovea.service_mode()) WITH CHECK (recovea.service_mode());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.pricing_facts TO recovea_app;

-- NULL cache writes bill as input (a provider without a write premium); long_context
-- is NULL or {above, <rates>, source}; service_tiers maps a tier to {multiplier,
-- source} or {<rates>, source} (the shipped table's shapes; the gateway validates).
ALTER TABLE recovea.model_prices
  ADD COLUMN cache_write_5m numeric CHECK (cache_write_5m >= 0),
  ADD COLUMN cache_write_1h numeric CHECK (cache_write_1h >= 0),
  ADD COLUMN long_context jsonb,
  ADD COLUMN service_tiers jsonb NOT NULL DEFAULT '{}';

ALTER TABLE recovea.usage_rollups
  ADD COLUMN cache_write_5m_tokens bigint NOT NULL DEFAULT 0,
  ADD COLUMN cache_write_1h_tokens bigint NOT NULL DEFAULT 0;
