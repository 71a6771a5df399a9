"""What the compose file exposes and which secrets it demands, checked statically (no Docker
engine here), and the PostgreSQL role script run for real against the machine's PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import inspect
from testkit import PG_ADMIN_DSN

from emergify_contracts.tables import create_tables, make_engine
from emergify_stream.config import Settings as StreamSettings

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "docker-compose.yml").read_text()
SERVICES = yaml.safe_load(TEXT)["services"]
RECOMMENDERS = ("recommender-1", "recommender-2", "recommender-3")
INTERNAL = ("ingest", "stream-processor", *RECOMMENDERS, "spotify-gateway")
INIT_SCRIPT = REPO / "deploy" / "postgres-init.sh"


def _env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()}


def _required(value: str) -> bool:
    """``${VAR:?message}``: compose refuses to start when VAR is unset or empty."""
    return bool(re.search(r"\$\{[A-Z_]+:\?[^}]+\}", value))


def test_only_the_gateway_and_the_dashboard_are_published() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"api-gateway", "dashboard"}
    assert SERVICES["api-gateway"]["ports"] == ["8080:8080"]
    assert SERVICES["dashboard"]["ports"] == ["8501:8501"]
    for name, port in (
        ("ingest", "8001"),
        ("stream-processor", "8002"),
        *((name, "8003") for name in RECOMMENDERS),
        ("spotify-gateway", "8004"),
        ("postgres", "5432"),
        ("kafka", "9092"),
        ("spark-master", "7077"),
    ):
        assert SERVICES[name]["expose"] == [port], name


def test_every_service_behind_the_gateway_and_the_gateway_get_the_internal_token() -> None:
    for name in (*INTERNAL, "api-gateway"):
        token = _env(name).get("EMERGIFY_INTERNAL_TOKEN", "")
        assert token.startswith("${EMERGIFY_INTERNAL_TOKEN:?"), name
    # The dashboard talks to the gateway only: it holds no internal token, no database
    # password and no admin key.
    dashboard = _env("dashboard")
    for secret in ("EMERGIFY_INTERNAL_TOKEN", "EMERGIFY_DATABASE_URL", "EMERGIFY_ADMIN_API_KEY"):
        assert secret not in dashboard


def test_postgres_has_no_default_password_and_the_services_are_not_its_superuser() -> None:
    postgres = _env("postgres")
    assert _required(postgres["POSTGRES_PASSWORD"])
    assert ":-" not in postgres["POSTGRES_PASSWORD"]
    assert "POSTGRES_USER" not in postgres  # the superuser stays `postgres`, used only by init
    assert _required(postgres["APP_DB_PASSWORD"])
    mounts = SERVICES["postgres"]["volumes"]
    assert any(
        m.startswith("./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/") for m in mounts
    )
    assert INIT_SCRIPT.exists() and os.access(INIT_SCRIPT, os.X_OK)
    for name in INTERNAL:
        url = _env(name)["EMERGIFY_DATABASE_URL"]
        assert url.startswith(f"postgresql+psycopg://{postgres['APP_DB_USER']}:"), name
        assert "${EMERGIFY_DB_PASSWORD:?" in url and "emergify}" not in url
    assert "${POSTGRES_PASSWORD:-" not in TEXT


def test_the_postgres_role_script_makes_a_non_superuser_that_can_create_the_tables() -> None:
    suffix = uuid.uuid4().hex[:8]
    database, role = f"emergify_init_{suffix}", f"emergify_app_{suffix}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": database,
            "APP_DB_USER": role,
            "APP_DB_PASSWORD": "a-password-for-the-test",
        }
        run = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        with psycopg.connect(PG_ADMIN_DSN) as conn:
            flags = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                "FROM pg_roles WHERE rolname = %s",
                (role,),
            ).fetchone()
        assert flags == (False, False, False, False, False)
        # The role owns its database, so the services can create their tables as it.
        engine = make_engine(f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}")
        try:
            create_tables(engine)
            assert "songs" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
        # And holds none of the powers a superuser has.
        with (
            psycopg.connect(f"host=127.0.0.1 user={role} dbname={database}") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("CREATE ROLE someone_else")
        without = {k: v for k, v in env.items() if k != "APP_DB_PASSWORD"}
        refused = subprocess.run(["sh", str(INIT_SCRIPT)], env=without, capture_output=True)
        assert refused.returncode != 0 and b"APP_DB_PASSWORD" in refused.stderr
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_spark_daemons_and_the_driver_authenticate_with_one_secret() -> None:
    for name in ("spark-master", "spark-worker"):
        opts = _env(name)["SPARK_DAEMON_JAVA_OPTS"]
        assert "-Dspark.authenticate=true" in opts
        assert "-Dspark.authenticate.secret=${EMERGIFY_SPARK_AUTH_SECRET:?" in opts
    driver = _env("stream-processor")["EMERGIFY_SPARK_AUTH_SECRET"]
    assert driver.startswith("${EMERGIFY_SPARK_AUTH_SECRET:?")
    # The driver turns the setting into the SparkSession's configuration.
    conf = StreamSettings(_env_file=None, spark_auth_secret="s3cret-value").spark_conf()  # type: ignore[call-arg]
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.authenticate.secret"] == "s3cret-value"
    assert "spark.authenticate" not in StreamSettings(_env_file=None).spark_conf()  # type: ignore[call-arg]


def test_session_and_token_secrets_reach_the_services_that_need_them() -> None:
    spotify, gateway = _env("spotify-gateway"), _env("api-gateway")
    for secret in ("EMERGIFY_SESSION_SECRET", "EMERGIFY_TOKEN_ENCRYPTION_KEY"):
        assert _required(spotify[secret]), secret
    assert _required(gateway["EMERGIFY_SESSION_SECRET"])  # the gateway verifies the cookie
    assert _required(gateway["EMERGIFY_ADMIN_API_KEY"])
    assert spotify["EMERGIFY_SPOTIFY_SANDBOX"] == "false"  # no sandbox container here


def test_volumes_are_handed_to_the_non_root_user_and_the_worker_mounts_the_models() -> None:
    init = SERVICES["volumes-init"]
    assert init["user"] == "0:0" and init["command"][:3] == ["chown", "-R", "1000:1000"]
    chowned = set(init["command"][3:])
    dockerfiles = [*REPO.glob("Dockerfile"), *REPO.glob("services/*/Dockerfile")]
    assert dockerfiles and all("USER 1000" in f.read_text() for f in dockerfiles)
    for name, service in SERVICES.items():
        ours = [v for v in service.get("volumes", []) if v.split(":")[1].startswith("/data/")]
        for volume in ours:
            assert volume.split(":")[1] in chowned, (name, volume)
        if ours and name != "volumes-init":
            condition = service["depends_on"]["volumes-init"]["condition"]
            assert condition == "service_completed_successfully", name
    models = _env("stream-processor")["EMERGIFY_MODELS_DIR"]
    assert f"models:{models}" in SERVICES["spark-worker"]["volumes"]
    assert "lake:/data/lake" in SERVICES["spark-worker"]["volumes"]


def test_api_keys_live_on_a_volume_and_the_dashboard_has_its_own_key() -> None:
    gateway = _env("api-gateway")
    keys_file = gateway["EMERGIFY_API_KEYS_FILE"]
    assert any(
        v.startswith("keys:") and keys_file.startswith(v.split(":")[1] + "/")
        for v in SERVICES["api-gateway"]["volumes"]
    )
    dashboard = _env("dashboard")
    assert _required(dashboard["EMERGIFY_DASHBOARD_API_KEY"])
    assert gateway["EMERGIFY_DASHBOARD_API_KEY"] == dashboard["EMERGIFY_DASHBOARD_API_KEY"]
    assert dashboard["EMERGIFY_DASHBOARD_UPLOADS"].endswith(":-false}")
