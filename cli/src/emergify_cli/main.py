"""The ``emergify`` command: run the stack, upload songs, ask for recommendations."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from emergify_cli import evaluation, keys
from emergify_cli.envfile import ensure_env_file
from emergify_cli.stack import Stack, services_for
from emergify_contracts.settings import EmergifySettings

app = typer.Typer(
    help="Emergify: playlists of emerging artists that sound like your favourites.",
    no_args_is_help=True,
)
app.add_typer(keys.app, name="keys")
console = Console()
ROOT = Path.cwd()
SAMPLE = ROOT / "data" / "every_fresh_find.csv"


def _settings() -> EmergifySettings:
    return EmergifySettings()


def _client(settings: EmergifySettings, timeout: float = 30.0) -> httpx.Client:
    headers = {}
    if settings.admin_api_key:
        headers["X-API-Key"] = settings.admin_api_key.get_secret_value()
    return httpx.Client(base_url=settings.gateway_url, headers=headers, timeout=timeout)


def _problem(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return f"HTTP {resp.status_code}: {body.get('title', '')} — {body.get('detail', '')}"
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"


class _CountingFile:
    """A file wrapper that advances a progress bar as httpx reads the upload."""

    def __init__(self, f: BinaryIO, on_read: Any) -> None:
        self._f = f
        self._on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._on_read(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def upload_file(
    settings: EmergifySettings, path: Path, show_progress: bool = True
) -> dict[str, Any]:
    """Upload a CSV through the gateway; return the ingest answer (raises on a problem)."""
    size = path.stat().st_size
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(f"uploading {path.name}", total=size)
        with path.open("rb") as raw, _client(settings, timeout=600) as client:
            wrapped = _CountingFile(raw, lambda n: progress.advance(task, n))
            resp = client.post(
                "/api/v1/songs/upload", files={"file": (path.name, wrapped, "text/csv")}
            )  # type: ignore[dict-item]
    if resp.status_code != 202:
        raise RuntimeError(_problem(resp))
    return resp.json()


def _print_rejections(answer: dict[str, Any], most: int = 20) -> None:
    rejected = answer.get("rejected", [])
    console.print(
        f"upload [bold]{answer['upload_id']}[/]: accepted [green]{answer['accepted']}[/], "
        f"rejected [red]{len(rejected)}[/]"
    )
    if rejected:
        table = Table("row", "track_id", "errors", title="rejected rows")
        for r in rejected[:most]:
            table.add_row(str(r["row"]), str(r.get("track_id") or ""), "; ".join(r["errors"]))
        console.print(table)
        if len(rejected) > most:
            console.print(f"… and {len(rejected) - most} more (use --errors-csv to save them all)")


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, any layout")],
    errors_csv: Annotated[Path | None, typer.Option(help="write every rejected row here")] = None,
) -> None:
    """Upload a CSV of songs (Exportify or Kaggle layout) with a progress bar."""
    settings = _settings()
    try:
        answer = upload_file(settings, file)
    except (RuntimeError, httpx.HTTPError) as exc:
        console.print(f"[red]upload failed:[/] {exc}")
        raise typer.Exit(1) from None
    _print_rejections(answer)
    if errors_csv:
        with errors_csv.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["row", "track_id", "errors"])
            for r in answer["rejected"]:
                w.writerow([r["row"], r.get("track_id") or "", "; ".join(r["errors"])])
        console.print(f"rejected rows written to {errors_csv}")


@app.command()
def recommend(
    seeds: Annotated[list[str], typer.Argument(help="Spotify track ids of songs you love")],
    limit: int = 10,
    max_popularity: Annotated[
        int | None,
        typer.Option(
            help="the emerging threshold; default: EMERGIFY_EMERGING_MAX_POPULARITY (100 lifts it)"
        ),
    ] = None,
    max_per_artist: int = 2,
) -> None:
    """Print a playlist of emerging-artist songs that sound like SEEDS."""
    settings = _settings()
    body: dict[str, Any] = {
        "seeds": seeds,
        "limit": limit,
        "max_per_artist": max_per_artist,
        "max_popularity": settings.emerging_max_popularity
        if max_popularity is None
        else max_popularity,
    }
    with _client(settings) as client:
        resp = client.post("/api/v1/recommendations", json=body)
    if resp.status_code != 200:
        console.print(f"[red]{_problem(resp)}[/]")
        raise typer.Exit(1)
    data = resp.json()
    table = Table(
        "#",
        "distance",
        "song",
        "artists",
        "popularity",
        "cluster",
        title=f"model v{data.get('model_version')}",
    )
    for i, item in enumerate(data["items"], 1):
        table.add_row(
            str(i),
            f"{item['distance']:.3f}",
            item["name"],
            ", ".join(item["artists"]),
            str(item.get("popularity")),
            str(item.get("cluster")),
        )
    console.print(table)


@app.command()
def evaluate(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="labelled CSVs")],
    label: Annotated[str, typer.Option(help="the label column (never a feature)")] = (
        "playlist_genre"
    ),
    sample: Annotated[int | None, typer.Option(help="seeds per file (default: all)")] = None,
    weights: Annotated[str, typer.Option(help="artist weights to compare, comma-separated")] = (
        ",".join(f"{w:g}" for w in evaluation.DEFAULT_WEIGHTS)
    ),
    out: Annotated[Path, typer.Option(help="JSON result")] = Path("bench/results/evaluation.json"),
    chart: Annotated[Path, typer.Option(help="PNG chart")] = Path("bench/results/evaluation.png"),
) -> None:
    """Offline evaluation: precision@10, nDCG@10, coverage, diversity, novelty per method;
    chooses the artist weight on validation seeds (docs/similarity.md)."""
    try:
        grid = [float(w) for w in weights.split(",") if w.strip()]
        result = evaluation.run_evaluation(
            files, label=label, sample=sample, weights=grid, progress=console.print
        )
    except ValueError as exc:
        console.print(f"[red]evaluation failed:[/] {exc}")
        raise typer.Exit(1) from None
    results = result.pop("_results")
    print(evaluation.summary_table(results, "test"))
    chosen = result["chosen"]
    console.print(
        f"chosen: {chosen['multi_artist_rule']} rule, artist weight {chosen['artist_weight']:g} "
        f"(validation score {chosen['validation_score']:.4f})"
    )
    for a in result["acceptance"]:
        console.print(
            f"{a['file']}: P@10 {a['precision_at_k']:.4f} "
            f"(scaled {a['precision_at_k_scaled']:.4f}); "
            f"artist excluded {a['precision_at_k_artist_excluded']:.4f} "
            f"({a['artist_excluded_gain']:+.1%} over scaled)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    evaluation.write_chart(results, chosen, chart)
    console.print(f"written: {out}, {chart}")


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="CSV to write (Kaggle layout)")],
    rows: Annotated[int, typer.Option(help="how many songs")] = 100_000,
    seed: int = 7,
) -> None:
    """Write a synthetic catalog drawn from the sample's feature distributions."""
    from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv

    n = write_kaggle_csv(synthetic_songs(load_songs(SAMPLE), rows, seed=seed), out)
    console.print(f"wrote {n} songs to {out}")


@app.command()
def status() -> None:
    """Show every service's health, the catalog and the model."""
    settings = _settings()
    with _client(settings, timeout=5) as client:
        try:
            health = client.get("/health").json()
        except httpx.HTTPError as exc:
            console.print(f"[red]gateway unreachable at {settings.gateway_url}: {exc}[/]")
            raise typer.Exit(1) from None
        table = Table("service", "status")
        for name, info in health.get("services", {}).items():
            table.add_row(name, str(info.get("status")))
        console.print(table)
        for path in ("/api/v1/catalog", "/api/v1/model"):
            resp = client.get(path)
            console.print(path, resp.json() if resp.status_code == 200 else _problem(resp))


def _sample_ids() -> tuple[int, str, str]:
    with SAMPLE.open(encoding="utf-8-sig", newline="") as f:
        rows = [r["Spotify ID"] for r in csv.DictReader(f)]
    return len(rows), rows[0], rows[-1]


def _catalog(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/api/v1/catalog")
    resp.raise_for_status()
    return resp.json()


def _load_sample(settings: EmergifySettings, stop: threading.Event) -> None:
    n, first, last = _sample_ids()
    with _client(settings) as client:
        held = all(client.get(f"/api/v1/songs/{i}").status_code == 200 for i in (first, last))
        if held:
            console.print(f"sample catalog already loaded ({_catalog(client)['songs']} songs)")
        else:
            answer = upload_file(settings, SAMPLE, show_progress=False)
            console.print(
                f"sample catalog uploaded: {answer['accepted']} accepted, "
                f"{len(answer['rejected'])} rejected"
            )
        started = time.monotonic()
        while not stop.is_set():
            cat = _catalog(client)
            if cat["songs"] >= n and cat.get("model_version") is not None:
                console.print(
                    f"catalog ready: {cat['songs']} songs, model v{cat['model_version']} "
                    f"({time.monotonic() - started:.1f} s)"
                )
                return
            stop.wait(1.0)


def _reset_stream_checkpoint() -> None:
    # The embedded broker keeps nothing across restarts, so offsets in an old checkpoint
    # point past the new, empty log; start the speed layer afresh (the feature table and
    # the master dataset keep every song).
    from emergify_stream.config import Settings as StreamSettings

    settings = StreamSettings()
    for checkpoint in (Path(settings.checkpoint_dir), Path(settings.feedback_checkpoint)):
        if checkpoint.exists():
            shutil.rmtree(checkpoint)


@app.command()
def rebuild(
    publish: Annotated[
        bool, typer.Option(help="send catalog-change and model events to Kafka")
    ] = True,
    train: Annotated[bool, typer.Option(help="train and publish a model afterwards")] = True,
) -> None:
    """Rebuild the feature table and the model from the master dataset alone (e.g. after the
    embedded broker lost its data). Run it while the stack is stopped."""
    from emergify_stream.batch.rebuild import main as rebuild_main

    args = [*([] if publish else ["--no-publish"]), *([] if train else ["--no-train"])]
    code = rebuild_main(args)
    if code:
        raise typer.Exit(code)


@app.command()
def up(
    load_sample: Annotated[bool, typer.Option(help="load data/every_fresh_find.csv")] = True,
    embedded_broker: Annotated[bool, typer.Option(help="start the embedded broker")] = True,
) -> None:
    """Start the whole system on its embedded defaults; Ctrl-C stops it."""
    env_path, created = ensure_env_file(ROOT)
    if created:
        console.print(f"created {env_path} with a fresh random EMERGIFY_ADMIN_API_KEY")
    settings = _settings()
    if embedded_broker:
        _reset_stream_checkpoint()
    from emergify_spotify.config import Settings as SpotifySettings

    sandbox = SpotifySettings().spotify_sandbox
    stack = Stack(
        env={},
        workdir=ROOT,
        services=services_for(sandbox),
        embedded_broker=embedded_broker,
        sink=lambda line: print(line, flush=True),
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        console.print("starting the embedded broker and the services…")
        stack.start()
        if load_sample:
            _load_sample(settings, stop)
        console.rule("Emergify is up")
        console.print(f"Dashboard       {settings.dashboard_url}")
        console.print(
            f"API gateway     {settings.gateway_url}   (health: {settings.gateway_url}/health)"
        )
        console.print(f"API docs        {settings.gateway_url}/docs")
        if sandbox:
            console.print(
                f"Spotify         offline demo: sandbox at {stack.url('spotify-sandbox')} "
                f"(sign in: {settings.gateway_url}/api/v1/spotify/login)"
            )
        console.print(
            f"admin API key   in {env_path} (EMERGIFY_ADMIN_API_KEY); send it as X-API-Key"
        )
        console.print("try             uv run emergify status   |   Ctrl-C stops everything")
        while not stop.is_set():
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with code {proc.returncode}; stopping[/]")
                    stop.set()
            stop.wait(1.0)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        console.print(f"[red]could not start: {exc}[/]")
        stack.stop()
        sys.exit(1)
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped")


if __name__ == "__main__":
    app()
