-- The hourly rollup runs per workspace, so one tenant's hour cannot hold back (or
-- time out) another's: the drainer marks (hour, workspace) pairs, not hours.

SELECT set_config('recovea.service', 'on', true);

CREATE TABLE recovea.rollup_pending_v2 (
  hour        timestamptz NOT NULL,
  customer_id uuid NOT NULL,
  PRIMARY KEY (hour, customer_id)
);

-- Hours already pending: every workspace with events in them.
INSERT INTO recovea.rollup_pending_v2 (hour, customer_id)
SELECT DISTINCT p.hour, e.customer_id
FROM recovea.rollup_pending p
JOIN recovea.request_events e ON e.ts >= p.hour AND e.ts < p.hour + interval '1 hour'
WHERE e.customer_id IS NOT NULL
ON CONFLICT DO NOTHING;

DROP TABLE recovea.rollup_pending;
ALTER TABLE recovea.rollup_pending_v2 RENAME TO rollup_pending;
ALTER INDEX recovea.rollup_pending_v2_pkey RENAME TO rollup_pending_pkey;
GRANT SELECT, INSERT, DELETE ON recovea.rollup_pending TO recovea_app;
