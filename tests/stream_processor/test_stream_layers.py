"""The layout shows the Lambda layers: the speed layer runs without the batch layer's code."""

from __future__ import annotations

import json
import subprocess
import sys

SPEED_MODULES = (
    "emergify_stream.speed.kafka_source",
    "emergify_stream.speed.feature_table",
    "emergify_stream.speed.speed_layer",
)


def test_the_speed_layer_imports_no_batch_module() -> None:
    # A fresh interpreter: this test process may have imported the batch layer already.
    script = (
        "import importlib, json, sys\n"
        f"for name in {SPEED_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('emergify_stream'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(SPEED_MODULES) <= set(loaded)
    batch = [
        m for m in loaded if m == "emergify_stream.batch" or m.startswith("emergify_stream.batch.")
    ]
    assert batch == [], f"the speed layer imports the batch layer: {batch}"
