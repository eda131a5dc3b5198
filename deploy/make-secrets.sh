#!/bin/sh
# Writes the secrets deploy/compose.yaml mounts, into deploy/secrets/ (or $1):
# the Postgres owner's and the app role's passwords, the two database URLs built
# from them, and a 32-byte local master key. Keeps files that already exist.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
new_password() {
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'
}
[ -s "$dir/postgres_password" ] || new_password > "$dir/postgres_password"
[ -s "$dir/app_db_password" ] || new_password > "$dir/app_db_password"
[ -s "$dir/master_key" ] || head -c 32 /dev/urandom > "$dir/master_key"
owner=$(cat "$dir/postgres_password")
app=$(cat "$dir/app_db_password")
printf 'postgresql://recovea:%s@postgres:5432/recovea\n' "$owner" > "$dir/database_url"
printf 'postgresql://recovea_app:%s@postgres:5432/recovea\n' "$app" > "$dir/app_database_url"
echo "secrets in $dir"
