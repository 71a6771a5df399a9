"""The offline evaluation on both genre-labelled files: ``emergify evaluate`` with the
product's defaults (docs/similarity.md explains the protocol).

    uv run python bench/evaluation.py            # every labelled song a seed
    uv run python bench/evaluation.py --quick    # 400 seeds per file

Writes bench/results/evaluation.json and bench/results/evaluation.png; prints the table of
the test seeds and the chosen artist weight.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = ["high_popularity_spotify_data.csv", "low_popularity_spotify_data.csv"]
RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    args = [
        sys.executable,
        "-m",
        "emergify_cli.main",
        "evaluate",
        *(str(DATA / f) for f in FILES),
        "--out",
        str(RESULTS / "evaluation.json"),
        "--chart",
        str(RESULTS / "evaluation.png"),
    ]
    if "--quick" in sys.argv:
        args += ["--sample", "400"]
    sys.exit(subprocess.call(args))
