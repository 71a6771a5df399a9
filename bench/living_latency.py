"""Living-playlist update latency, end to end: from an upload's 202 to the Spotify write.

The whole stack as `make up` starts it with the offline demo (embedded broker, Spark local[2],
SQLite, every service and the Spotify sandbox; the dashboard is not started): the sample
catalog is loaded, the demo listener signs in through the gateway, and each probe

1. creates a living playlist of ``--size`` songs around one catalog seed
   (``POST /api/v1/spotify/living-playlists``, as the listener);
2. uploads one new song that is a near-copy of the seed (``POST /api/v1/songs`` with the
   admin key, a new id, title and artist) and notes its 202;
3. polls, every 20 ms, the living playlist's desired songs
   (``GET /api/v1/spotify/living-playlists/{id}``: the recommender's matcher wrote them) and
   the sandbox's copy of the Spotify playlist (the spotify-gateway's sync worker wrote it).

The path measured: ingest (lake + songs topic) -> Spark speed layer -> feature table ->
catalog-change event -> recommender (catalog reload, living matcher, desired state, living
playlist event) -> spotify-gateway sync worker -> Spotify (the sandbox). Every probe also
checks what the acceptance asks: the playlist on Spotify still holds ``size`` songs, none
twice, the new song in and the furthest one out. A probe without its Spotify write within
``--probe-timeout`` is a failure: counted, named in the JSON, and the exit code is 1.

    uv run python bench/living_latency.py [--probes 20] [--quick] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from loop_stack import (
    SAMPLE,
    BenchFailure,
    RunningStack,
    call,
    exit_with,
    machine_load,
    pct,
    run_facts,
    running_stack,
    write_results,
)
from spotify_stack import sign_in

from emergify_cli.stack import free_port, services_for
from emergify_cli.synthetic_catalog import load_songs
from emergify_contracts.song import Song

LISTENER = "demo"  # a sandbox listener


def sandbox_env(gateway_url: str) -> dict[str, str]:
    """The offline demo's settings for a stack on free ports (as the browser test sets them)."""
    callback = f"{gateway_url}/api/v1/spotify/callback"
    return {
        "EMERGIFY_SPOTIFY_SANDBOX": "true",
        "EMERGIFY_SPOTIFY_REDIRECT_URI": callback,
        "EMERGIFY_SPOTIFY_SANDBOX_REDIRECT_URIS": json.dumps([callback]),
        "EMERGIFY_SPOTIFY_SANDBOX_CATALOG_CSV": str(SAMPLE),
        "EMERGIFY_SPOTIFY_SANDBOX_AUTO_APPROVE": "true",  # sign_in picks the listener by hint
        "EMERGIFY_SESSION_SECRET": secrets.token_urlsafe(32),
        "EMERGIFY_TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }


def near_copy(song: Song, n: int, run: str) -> Song:
    """A different song (own id, title and artist) that sounds almost exactly like ``song``."""
    return song.model_copy(
        update={
            "track_id": f"Lb{run}{n:016d}",
            "name": f"Echo {run} {n}",
            "artists": [f"Echo Artist {run} {n}"],
            "artist_ids": [f"EchoArtist{run}{n:08d}"],
            "popularity": 10,
            "energy": min(1.0, song.energy + 0.001),
        }
    )


def spotify_items(sandbox: httpx.Client, spotify_id: str) -> list[str]:
    """The track ids the sandbox holds in the playlist, in order."""
    r = call(sandbox, "GET", f"/_sandbox/users/{LISTENER}/playlists")
    return next(p["track_ids"] for p in r.json()["items"] if p["id"] == spotify_id)


def probe(
    running: RunningStack,
    browser: httpx.Client,
    sandbox: httpx.Client,
    seed: Song,
    copy: Song,
    size: int,
    timeout_s: float,
) -> dict[str, float]:
    """One living playlist around ``seed``, then ``copy`` uploaded: seconds from the 202 to
    the desired state and to Spotify."""
    created = call(
        browser,
        "POST",
        "/api/v1/spotify/living-playlists",
        expect=201,
        json={
            "name": f"Bench {copy.track_id}",
            "size": size,
            "max_popularity": 100,
            "seeds": [seed.track_id],
        },
    ).json()
    living_id, spotify_id = created["id"], created["spotify_playlist_id"]
    before = [s["track_id"] for s in created["songs"]]  # nearest first
    running.poll(
        lambda: sorted(spotify_items(sandbox, spotify_id)) == sorted(before),
        timeout_s,
        f"living playlist {living_id} to be created on Spotify",
    )
    call(
        running.api,
        "POST",
        "/api/v1/songs",
        expect=202,
        json=[copy.model_dump(mode="json")],
    )
    accepted = time.perf_counter()
    stamps: dict[str, float] = {}

    def done() -> bool:
        if "desired_s" not in stamps:
            songs = call(browser, "GET", f"/api/v1/spotify/living-playlists/{living_id}").json()
            if copy.track_id in {s["track_id"] for s in songs["songs"]}:
                stamps["desired_s"] = time.perf_counter() - accepted
        if "spotify_s" not in stamps and copy.track_id in spotify_items(sandbox, spotify_id):
            stamps["spotify_s"] = time.perf_counter() - accepted
        return len(stamps) == 2

    running.poll(done, timeout_s, f"{copy.track_id} to reach Spotify playlist {spotify_id}")
    # The sync removes the furthest song in the same pass, or right after adding: wait for it.
    final = running.poll(
        lambda: (items := spotify_items(sandbox, spotify_id)) and len(items) == size and items,
        timeout_s,
        f"Spotify playlist {spotify_id} to hold {size} songs again",
    )
    if len(set(final)) != len(final):
        raise BenchFailure(f"Spotify playlist {spotify_id} holds a song twice: {final}")
    if before[-1] in final or copy.track_id not in final:
        raise BenchFailure(
            f"Spotify playlist {spotify_id}: expected {copy.track_id} in and {before[-1]} "
            f"(the furthest) out, got {final}"
        )
    stopped = call(browser, "DELETE", f"/api/v1/spotify/living-playlists/{living_id}")
    if stopped.json()["stopped_at"] is None:
        raise BenchFailure(f"living playlist {living_id} did not stop")
    return stamps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20, help="uploads to time")
    parser.add_argument("--quick", action="store_true", help="5 probes")
    parser.add_argument("--size", type=int, default=20, help="songs per living playlist")
    parser.add_argument(
        "--probe-timeout", type=float, default=180.0, help="seconds an update may take"
    )
    parser.add_argument(
        "--database-url", default=None, help="default: SQLite in a temporary folder"
    )
    parser.add_argument(
        "--model-wait",
        type=float,
        default=300.0,
        help="seconds to wait for a first model before probing without one",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no probe after this many minutes of probing (the JSON says how many ran)",
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    probes = 5 if args.quick else args.probes
    real = load_songs(SAMPLE)
    run = secrets.token_hex(2)  # new ids on every run
    desired: list[float] = []
    spotify: list[float] = []
    failures: list[str] = []
    loads: list[float] = []
    load_before = machine_load()
    services = tuple(s for s in services_for(spotify_sandbox=True) if s.name != "dashboard")
    gateway_url = f"http://127.0.0.1:{free_port()}"
    env = {"EMERGIFY_GATEWAY_URL": gateway_url, **sandbox_env(gateway_url)}
    with running_stack(
        "living",
        services=services,
        env=env,
        database_url=args.database_url,
        model_timeout=args.model_wait,
    ) as running:
        sandbox = httpx.Client(base_url=running.stack.url("spotify-sandbox"), timeout=60)
        browser = httpx.Client(base_url=gateway_url, follow_redirects=False, timeout=300)
        try:
            model_version = running.model_version
            sign_in(browser, LISTENER)
            # Warm-up: the first living playlist and the first catalog change after it.
            warm = real[7]
            probe(running, browser, sandbox, warm, near_copy(warm, 0, run), args.size, 600)
            started = time.monotonic()
            for i in range(1, probes + 1):
                if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                    print(f"--max-minutes reached after {i - 1} probes", flush=True)
                    probes = i - 1
                    break
                seed = real[(i * 131 + 17) % len(real)]
                try:
                    stamps = probe(
                        running,
                        browser,
                        sandbox,
                        seed,
                        near_copy(seed, i, run),
                        args.size,
                        args.probe_timeout,
                    )
                except BenchFailure as exc:
                    running.check_alive()  # a dead service ends the run
                    failures.append(f"probe {i}: {exc}")
                    print(f"FAILED probe {i}: {exc}", flush=True)
                    continue
                desired.append(stamps["desired_s"])
                spotify.append(stamps["spotify_s"])
                loads.append(machine_load()["load_1m"])
                print(
                    f"probe {i}: 202 -> desired {stamps['desired_s']:.2f} s, -> Spotify "
                    f"{stamps['spotify_s']:.2f} s (load {loads[-1]})",
                    flush=True,
                )
        finally:
            browser.close()
            sandbox.close()
    if not spotify:
        print("no probe succeeded:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    figures: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "probes": probes,
        "succeeded": len(spotify),
        "size": args.size,
        "p50_s": round(pct(spotify, 50), 3),
        "p95_s": round(pct(spotify, 95), 3),
        "max_s": round(max(spotify), 3),
        "desired_p50_s": round(pct(desired, 50), 3),
        "desired_p95_s": round(pct(desired, 95), 3),
        "desired_to_spotify_p50_s": round(
            pct([s - d for d, s in zip(desired, spotify, strict=True)], 50), 3
        ),
        **run_facts(
            failures=failures,
            loads=loads,
            load_before=load_before,
            model_version=model_version,
            database_url=args.database_url,
        ),
    }
    print("| probes ok | 202 -> Spotify p50 / p95 / max (s) | 202 -> desired p50 / p95 | load |")
    print("|---|---|---|---|")
    print(
        f"| {len(spotify)}/{probes} | {figures['p50_s']} / {figures['p95_s']} / "
        f"{figures['max_s']} | {figures['desired_p50_s']} / {figures['desired_p95_s']} | "
        f"{figures['load_average_1m_mean']} |"
    )
    print(f"results: {write_results('living_latency', figures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    exit_with("living_latency", main)
