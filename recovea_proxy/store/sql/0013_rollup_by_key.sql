-- Usage by rcv_ key: the rollup keeps the key each request was made with as one more
-- dimension (`GET /v1/recovea/usage?group_by=key`). Keys are made by admins, so their
-- number per workspace and hour is bounded like the other non-tag dimensions; a
-- passthrough request has no key (NULL). Rows rolled up before this migration hold
-- NULL too; `recovea rollup --since DATE` rolls their hours up again with the key.

ALTER TABLE recovea.usage_rollups ADD COLUMN rcv_key_id uuid;
