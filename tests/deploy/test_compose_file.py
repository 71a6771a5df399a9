"""docker-compose.yml cannot run here (no Docker engine), so check it against the repo."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
ROOT_PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# compose service -> (settings module, URL setting that names its port)
OURS = {
    "ingest": ("emergify_ingest", "ingest_url"),
    "stream-processor": ("emergify_stream", "stream_processor_url"),
    "recommender-1": ("emergify_recommender", "recommender_url"),
    "spotify-gateway": ("emergify_spotify", "spotify_gateway_url"),
    "api-gateway": ("emergify_gateway", "gateway_url"),
    "dashboard": ("emergify_dashboard", "dashboard_url"),
}


def _settings_fields() -> set[str]:
    fields: set[str] = set()
    for module, _ in OURS.values():
        config = importlib.import_module(f"{module}.config")
        fields |= {f"EMERGIFY_{name.upper()}" for name in config.Settings.model_fields}
    return fields


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_the_scale_out_parts_are_all_there() -> None:
    assert {"kafka", "postgres", "spark-master", "spark-worker", *OURS} <= set(SERVICES)
    assert "zookeeper" not in SERVICES
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in _env(kafka)["KAFKA_PROCESS_ROLES"]  # KRaft
    assert SERVICES["postgres"]["image"].startswith("postgres:")


def _build_args(name: str) -> dict[str, str]:
    """The build arguments of the compose service that builds `name`'s image."""
    image = SERVICES[name]["image"]
    builders = [s for s in SERVICES.values() if s.get("image") == image and s.get("build")]
    assert len(builders) == 1, f"{name}: {len(builders)} services build {image}"
    build = builders[0]["build"]
    assert build["context"] == "." and build["dockerfile"] == "Dockerfile", name
    return {key: str(value) for key, value in build["args"].items()}


def _workspace_members() -> dict[str, Path]:
    """Workspace package name -> its folder."""
    members = {}
    for pattern in ROOT_PYPROJECT["tool"]["uv"]["workspace"]["members"]:
        for folder in REPO.glob(pattern):
            project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
            members[project["name"]] = folder
    return members


def test_every_service_builds_from_the_one_dockerfile_and_runs_a_real_module() -> None:
    assert not list(REPO.glob("services/*/Dockerfile")), "a per-service Dockerfile is back"
    declared = set(re.findall(r"^ARG (\w+)", DOCKERFILE, flags=re.M))
    members = _workspace_members()
    for name, (module, url_setting) in OURS.items():
        args = _build_args(name)
        assert set(args) <= declared, f"{name} passes arguments the Dockerfile lacks"
        assert args["MODULE"] == module, name
        package_dir = members[args["PACKAGE"]]
        assert (package_dir / "src" / module / "__main__.py").exists(), f"{module} has no __main__"
        config = importlib.import_module(f"{module}.config")
        assert int(args["PORT"]) == urlparse(config.Settings.model_fields[url_setting].default).port
    assert _build_args("stream-processor")["APT_PACKAGES"].startswith("openjdk-17")


def _copied(text: str) -> list[str]:
    """The repository paths the COPY instructions of `text` copy (not COPY --from)."""
    sources = []
    for line in re.findall(r"^COPY (?!--)(.+)$", text, flags=re.M):
        sources += line.split()[:-1]
    return sources


def test_the_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    for copied in _copied(DOCKERFILE):
        assert (REPO / copied).exists(), f"the Dockerfile copies missing {copied}"
    syncs = [m.start() for m in re.finditer(r"^RUN uv sync --frozen", DOCKERFILE, flags=re.M)]
    assert len(syncs) == 2
    first_sync = DOCKERFILE[: syncs[0]]
    assert "--no-install-workspace" in DOCKERFILE[syncs[0] :].splitlines()[0]
    before = _copied(first_sync)
    # Before the first sync: the lock and every member's pyproject (uv needs all of them to
    # read the workspace), and nothing else of ours.
    assert {"uv.lock", "pyproject.toml"} <= set(before)
    member_files = {
        str(p.relative_to(REPO) / "pyproject.toml") for p in _workspace_members().values()
    }
    assert member_files <= set(before)
    assert all(c in {"uv.lock", ".python-version"} or c.endswith("pyproject.toml") for c in before)
    assert 'exec python -m \\"$SERVICE_MODULE\\"' in DOCKERFILE
    assert "SERVICE_MODULE=${MODULE}" in DOCKERFILE


def test_ports_match_the_settings_defaults() -> None:
    for name, (module, url_setting) in OURS.items():
        config = importlib.import_module(f"{module}.config")
        default = config.Settings.model_fields[url_setting].default
        port = urlparse(default).port
        # Only the gateway and the dashboard are published; the rest is on the network alone.
        published = name in ("api-gateway", "dashboard")
        where = SERVICES[name]["ports" if published else "expose"]
        assert (f"{port}:{port}" if published else str(port)) in where, (name, port)
        in_compose = _env(SERVICES[name]).get(f"EMERGIFY_{url_setting.upper()}")
        if in_compose:
            assert urlparse(in_compose).port == port


def test_every_emergify_variable_is_a_real_setting() -> None:
    known = _settings_fields()
    for name, service in SERVICES.items():
        for var in _env(service):
            if var.startswith("EMERGIFY_"):
                assert var in known, f"{name}: {var} is not a setting of any service"


def test_spark_runs_from_our_image_with_a_real_spark_class() -> None:
    bin_dir = Path(importlib.import_module("pyspark").__file__).parent / "bin"
    for name in ("spark-master", "spark-worker"):
        command = SERVICES[name]["command"]
        assert command[0] == "spark-class" and (bin_dir / "spark-class").exists()
        assert command[1].startswith("org.apache.spark.deploy.")
    assert (
        _env(SERVICES["stream-processor"])["EMERGIFY_SPARK_MASTER"] == "spark://spark-master:7077"
    )


RECOMMENDERS = ("recommender-1", "recommender-2", "recommender-3")


def test_the_gateway_balances_across_three_recommender_replicas() -> None:
    gateway = SERVICES["api-gateway"]
    urls = _env(gateway)["EMERGIFY_RECOMMENDER_URLS"].split(",")
    assert urls == [f"http://{name}:8003" for name in RECOMMENDERS]
    assert set(RECOMMENDERS) <= set(gateway["depends_on"])
    assert "recommender" not in SERVICES  # only the replicas, under their own names
    for name in RECOMMENDERS:
        replica = SERVICES[name]
        env = _env(replica)
        assert replica["image"] == "emergify/recommender", name
        # Its own URL (the Host it answers to) and name (in every recommendation it serves).
        assert env["EMERGIFY_RECOMMENDER_URL"] == f"http://{name}:8003"
        assert env["EMERGIFY_REPLICA_NAME"] == name
        # spotify-gateway's look-ups go to the shared alias: each replica answers to it.
        assert replica["networks"]["default"]["aliases"] == ["recommender"]
        assert "recommender" in env["EMERGIFY_ALLOWED_HOSTS"].split(",")
        assert (
            env["EMERGIFY_DATABASE_URL"] == _env(SERVICES["recommender-1"])["EMERGIFY_DATABASE_URL"]
        )  # one catalog
    assert urlparse(_env(SERVICES["spotify-gateway"])["EMERGIFY_RECOMMENDER_URL"]).hostname == (
        "recommender"
    )
