"""docker-compose.yml cannot run here (no Docker engine), so check it against the repo."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]

# compose service -> (settings module, URL setting that names its port)
OURS = {
    "ingest": ("emergify_ingest", "ingest_url"),
    "stream-processor": ("emergify_stream", "stream_processor_url"),
    "recommender": ("emergify_recommender", "recommender_url"),
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


def test_every_image_we_build_has_a_dockerfile_that_runs_a_real_module() -> None:
    for name, (module, _) in OURS.items():
        build = SERVICES[name].get("build")
        image = SERVICES[name]["image"]
        if build is None:  # built by another compose service
            assert any(s.get("image") == image and s.get("build") for s in SERVICES.values()), name
            continue
        dockerfile = REPO / build["dockerfile"]
        text = dockerfile.read_text()
        assert f'CMD ["python", "-m", "{module}"]' in text, dockerfile
        src = next(REPO.glob(f"services/*/src/{module}"))
        assert (src / "__main__.py").exists(), f"{module} has no __main__"
        for copied in re.findall(r"^COPY (\S+) ", text, flags=re.M):
            if not copied.startswith("--"):
                assert (REPO / copied).exists(), f"{dockerfile} copies missing {copied}"


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
