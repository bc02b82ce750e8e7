"""PostgreSQL DDL for the time-partitioned ``telemetry`` table, shared by the migrations.

``telemetry`` is ``PARTITION BY RANGE (ts)`` with one partition per calendar month (UTC), named
``telemetry_pYYYYMM``, plus ``telemetry_default`` so that no reading is ever refused.

Partitions are made ahead of time by the SQL function
``brm_ensure_telemetry_partitions(first_month date, months int) RETURNS int`` (how many it
created). The migration calls it for the month before the upgrade and the next 12; run it again
from cron or ``battery-central db partitions`` to keep a year ahead. A month that already has rows
in the default partition is still safe: the function moves those rows into the new partition
before attaching it.

Revision 0007 makes the key covering (``INCLUDE`` the measured values), so that "one battery over
a time range" is an index-only scan instead of one heap page per reading (rows are written in
time order, so a battery's day is spread over a page per reading). An index-only scan skips the
heap only for pages the visibility map marks all-visible, which vacuum sets; autovacuum's default
for inserts (20 % of the table) would leave days of a monthly partition unmarked, so from 0007
every partition is vacuumed after ``VACUUM_INSERT_THRESHOLD`` new rows instead.
"""

from __future__ import annotations

MONTHS_AHEAD = 12

CREATE_TABLE = """
CREATE TABLE telemetry (
    battery_id varchar(64) NOT NULL,
    ts timestamptz NOT NULL,
    voltage double precision,
    current double precision,
    temperature double precision,
    internal_resistance double precision,
    soc_pct double precision,
    soh_pct double precision,
    CONSTRAINT pk_telemetry PRIMARY KEY (battery_id, ts)
) PARTITION BY RANGE (ts)
"""

CREATE_DEFAULT_PARTITION = "CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT"

# What the key carries besides (battery_id, ts) from revision 0007.
COVERED_COLUMNS = ("voltage", "current", "temperature", "internal_resistance", "soc_pct", "soh_pct")
# Vacuum each partition after this many inserted rows (about 20 minutes of a 10,000-block fleet
# read every minute), whatever its size. Vacuuming an insert-only partition reads only the pages
# not yet marked all-visible, so frequent runs stay cheap.
VACUUM_INSERT_THRESHOLD = 200_000
PARTITION_OPTIONS = (
    "autovacuum_vacuum_insert_scale_factor = 0,"
    f" autovacuum_vacuum_insert_threshold = {VACUUM_INSERT_THRESHOLD}"
)

_FUNCTION = """
CREATE OR REPLACE FUNCTION brm_ensure_telemetry_partitions(first_month date, months int)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    lower_bound timestamptz;
    upper_bound timestamptz;
    part text;
    created int := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass) THEN
        RETURN 0;  -- not natively partitioned (a TimescaleDB hypertable makes its own chunks)
    END IF;
    FOR i IN 0 .. months - 1 LOOP
        lower_bound := (date_trunc('month', first_month::timestamp)
            + make_interval(months => i)) AT TIME ZONE 'UTC';
        upper_bound := (date_trunc('month', first_month::timestamp)
            + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        part := 'telemetry_p' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYYMM');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE telemetry INCLUDING DEFAULTS){with_options}', part);
        -- Rows the default partition already holds for this month move before the attach,
        -- which would otherwise fail on them.
        EXECUTE format(
            'WITH moved AS (DELETE FROM telemetry_default WHERE ts >= $1 AND ts < $2 RETURNING *)'
            ' INSERT INTO %I SELECT * FROM moved', part)
            USING lower_bound, upper_bound;
        EXECUTE format('ALTER TABLE telemetry ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            part, lower_bound, upper_bound);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$
"""


def create_function(partition_options: str = "") -> str:
    """The partition helper; the partitions it makes get ``partition_options`` (storage
    parameters, as ``WITH (...)`` takes them), none by default (revision 0001's helper)."""
    with_options = f" WITH ({partition_options})" if partition_options else ""
    return _FUNCTION.replace("{with_options}", with_options)


DROP_FUNCTION = "DROP FUNCTION IF EXISTS brm_ensure_telemetry_partitions(date, int)"

ENSURE_AROUND_NOW = (
    "SELECT brm_ensure_telemetry_partitions("
    "(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month')::date,"
    f" {MONTHS_AHEAD + 2})"
)


def create_statements() -> list[str]:
    """The partitioned table, its default partition, the helper, and a year of partitions."""
    return [CREATE_TABLE, CREATE_DEFAULT_PARTITION, create_function(), ENSURE_AROUND_NOW]
