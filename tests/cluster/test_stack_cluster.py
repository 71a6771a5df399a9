"""``make up SPARK=cluster``: the stack runner starts a standalone master and two workers
before the services, the stream processor submits to them, and stopping the stack stops
every daemon."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from emergify_cli.broker import free_port
from emergify_cli.stack import SERVICES, Stack, free_port_env


@pytest.mark.cluster
@pytest.mark.spark
def test_stack_with_spark_cluster_setting_runs_the_stream_processor_on_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_SPARK_CLUSTER": "1",
            "EMERGIFY_SPARK_CLUSTER_PORT": str(free_port()),
            "EMERGIFY_SPARK_CLUSTER_WEBUI_PORT": str(free_port()),
            "EMERGIFY_SPARK_CLUSTER_WORKER_MEMORY": "768m",
            "EMERGIFY_DATABASE_URL": sqlite_url,
            "EMERGIFY_LOG_LEVEL": "WARNING",
        }
    )
    lines: list[str] = []
    stack = Stack(
        env=env,
        workdir=tmp_path,
        services=tuple(s for s in SERVICES if s.name == "stream-processor"),
        sink=lines.append,
    )
    try:
        stack.start()
        cluster = stack.spark_cluster
        assert cluster is not None and cluster.alive_workers() == 2
        assert stack.env["EMERGIFY_SPARK_MASTER"] == cluster.master_url
        # The internal credential (set where services require it).
        token = stack.env.get("EMERGIFY_INTERNAL_TOKEN", "")
        status = httpx.get(
            f"{stack.url('stream-processor')}/admin/status",
            timeout=30,
            headers={"X-Emergify-Internal-Token": token},
        )
        assert status.status_code == 200, status.text
        apps = cluster.state()["activeapps"]
        assert [a["name"] for a in apps] == ["emergify-stream-processor"]
        assert len(cluster.executor_pids()) == 2
        daemons = [p.pid for p in cluster.procs]
    finally:
        stack.stop()
        (tmp_path / "stack.log").write_text("\n".join(lines))
    assert stack.spark_cluster is None
    for pid in daemons:  # every daemon's process group is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
