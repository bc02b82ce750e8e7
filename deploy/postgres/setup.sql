-- PostgreSQL for battery-central: a role and a database it owns. Run once as a superuser:
--   sudo -u postgres psql -v ON_ERROR_STOP=1 -f deploy/postgres/setup.sql
-- then create the schema with the migrations, as the service user:
--   sudo -u brm env $(cat /etc/battery-rul/central.env | grep -v '^#' | xargs) \
--     /opt/battery-rul/venv/bin/battery-central db upgrade
-- (battery-central-serve.service also runs "db upgrade" before every start.)
--
-- Safe to run again. psql variables (-v NAME=value) override the defaults:
--   db_name (brm), db_role (brm), db_password (none: the role logs in through the local socket
--   with peer authentication as the system user brm; else taken from $BRM_DB_PASSWORD if set).

\if :{?db_name}
\else
\set db_name brm
\endif
\if :{?db_role}
\else
\set db_role brm
\endif
\if :{?db_password}
\else
\getenv db_password BRM_DB_PASSWORD
\endif

-- The role owns its database and nothing else: no superuser, no role or database creation.
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', :'db_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_role') \gexec
\if :{?db_password}
ALTER ROLE :"db_role" PASSWORD :'db_password';
\endif

SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'db_name', :'db_role', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \gexec
REVOKE ALL ON DATABASE :"db_name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db_name" TO :"db_role";

\connect :"db_name"
-- The migrations create every table, index and function in schema public.
ALTER SCHEMA public OWNER TO :"db_role";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
-- TimescaleDB, where installed, needs a superuser to create the extension: do it here, and the
-- migration makes telemetry a hypertable; without it telemetry is partitioned by month.
SELECT 'CREATE EXTENSION IF NOT EXISTS timescaledb'
WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') \gexec
