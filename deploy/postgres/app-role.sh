#!/bin/sh
# Runs once, when the Postgres volume is first initialised: creates the gateway's
# role (no superuser, cannot bypass row-level security, owns nothing) with its
# password from the app_db_password secret. The migrations grant it what it needs.
set -eu
password=$(cat /run/secrets/app_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$password" <<'SQL'
CREATE ROLE recovea_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD :'password';
SQL
