-- A workspace's own AWS KMS key (`recovea workspace kms set`): its provider keys'
-- data keys are wrapped under it, and unwrapped only through it.
--
-- kms_key_id is the key as the operator gave it (id, ARN or alias); kms_key_arn is
-- the key ARN KMS answered with when it was set, which every wrap and unwrap names,
-- so re-pointing an alias later does not move the workspace to another key.
ALTER TABLE recovea.workspaces
  ADD COLUMN kms_key_id  text CHECK (kms_key_id IS NULL OR length(kms_key_id) BETWEEN 1 AND 2048),
  ADD COLUMN kms_key_arn text CHECK (kms_key_arn IS NULL OR length(kms_key_arn) BETWEEN 1 AND 2048),
  ADD COLUMN kms_set_at  timestamptz,
  ADD CONSTRAINT workspaces_kms_key_complete
    CHECK ((kms_key_id IS NULL) = (kms_key_arn IS NULL) AND (kms_key_id IS NULL) = (kms_set_at IS NULL));

-- What the gateways last saw of a workspace's own key (key_arn): reason NULL when it
-- last worked, else why it did not (since: when that state was first seen). Written
-- by a gateway when what it sees changes, read by `recovea workspace show`.
CREATE TABLE recovea.workspace_kms_status (
  customer_id  uuid PRIMARY KEY REFERENCES recovea.workspaces ON DELETE CASCADE,
  key_arn      text NOT NULL,
  reason       text CHECK (reason IS NULL OR reason IN
                 ('disabled', 'access_denied', 'not_found', 'unreachable', 'refused')),
  since        timestamptz NOT NULL,
  checked_at   timestamptz NOT NULL
);

ALTER TABLE recovea.workspace_kms_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovea.workspace_kms_status FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON recovea.workspace_kms_status
  USING (customer_id = recovea.current_customer())
  WITH CHECK (customer_id = recovea.current_customer());
CREATE POLICY service_access ON recovea.workspace_kms_status
  USING (recovea.service_mode()) WITH CHECK (recovea.service_mode());
GRANT SELECT, INSERT, UPDATE, DELETE ON recovea.workspace_kms_status TO recovea_app;
