-- Signed receipt checkpoints (RECOVEA_RECEIPT_SIGNING=checkpoint): the token of a
-- `recovea-checkpoint-v1`, the Ed25519-signed head of a receipt chain at `seq`. Each
-- covers the chain's receipts up to its seq (their hash links lead to its head).
-- Written by the drainer beside the receipts; tenant data like them (RLS FORCEd,
-- scoped by customer_id, and the service policy for the drainer and retention).

CREATE TABLE recovea.receipt_checkpoints (
  chain_id     text NOT NULL,
  seq          bigint NOT NULL CHECK (seq >= 1),
  customer_id  uuid NOT NULL,
  kid          text NOT NULL,
  ts           timestamptz NOT NULL,
  token        text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (chain_id, seq)
);
CREATE INDEX receipt_checkpoints_customer_ts ON recovea.receipt_checkpoints (customer_id, ts);

ALTER TABLE recovea.receipt_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.receipt_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.receipt_checkpoints
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
CREATE POLICY service_access ON recovea.receipt_checkpoints
  USING (recovea.service_mode()) WITH CHECK (recovea.service_mode());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.receipt_checkpoints TO recovea_app;
