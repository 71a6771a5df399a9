#!/bin/sh
# The role the Emergify services connect as: it owns the emergify database (so it may create
# the tables) and nothing else; no superuser, no CREATEDB, no CREATEROLE, no replication.
# PostgreSQL's image runs this once, when the data volume is first initialised
# (docker-entrypoint-initdb.d); tests/deploy runs it against the machine's PostgreSQL.
set -eu
: "${APP_DB_PASSWORD:?set APP_DB_PASSWORD, the services database password}"
role="${APP_DB_USER:-emergify_app}"
database="${POSTGRES_DB:-emergify}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$database" \
    -v role="$role" -v password="$APP_DB_PASSWORD" -v database="$database" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';
ALTER DATABASE :"database" OWNER TO :"role";
ALTER SCHEMA public OWNER TO :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"role";
SQL
