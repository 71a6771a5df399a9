"""Synthetic catalogs for the benchmarks, drawn from the real data's feature distributions.

The real 4,470 songs of ``data/every_fresh_find.csv`` come first; the rest follow one of
:data:`SHAPES`:

- ``bootstrap5``: a real song plus Gaussian noise of 5% of each feature's standard
  deviation (the vectorized twin of :func:`emergify_cli.synthetic_catalog.synthetic_songs`):
  at 1M songs, ~224 near-copies of every real song, an easy shape for pruning.
- ``bootstrap30``: the same with 30% noise: correlations survive, copies do not.
- ``marginals``: every feature drawn independently from its real distribution (a real
  value of that feature plus 5% noise): no correlation left, the hardest shape for
  partitions.
- ``mixture``: a Gaussian mixture (full covariances) fitted to the real features.

Values are clipped to the valid ranges and rounded to 6 decimals. Names are the real row's,
with a suffix, so text columns cost what real ones do. Artists (``Catalog.artists``):
``random`` draws a synthetic song's artists from the real pool (85% one, else two), so at
1M songs each artist has ~300 unrelated songs and flat profiles; ``coherent`` credits the
artists of the real song nearest to it (standardized features), so an artist's songs sit
near each other, as in real data (docs/similarity.md: the profiles then differ). A model
(StandardScaler -> PCA -> KMeans) is fitted in NumPy + scikit-learn the way the batch
layer fits it.
"""

from __future__ import annotations

import csv
import functools
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from emergify_contracts.artist_profiles import ArtistProfiles, artist_keys, artist_profiles
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES, RowError, Song, detect_layout, row_to_song
from emergify_recommender.records import SongRecord

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = ROOT / "data" / "every_fresh_find.csv"
_BASE62 = np.frombuffer((string.digits + string.ascii_letters).encode(), dtype=np.uint8)
_UNIT = [f for f in AUDIO_FEATURES if f not in ("loudness", "tempo")]


def real_songs(path: Path = SAMPLE_CSV) -> list[Song]:
    """Every valid song of the sample CSV, unique by id."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        out: dict[str, Song] = {}
        for row in reader:
            try:
                song = row_to_song(row, layout)
            except RowError:
                continue
            out[song.track_id] = song
    return list(out.values())


@dataclass
class Catalog:
    """A synthetic catalog: features (n x 9), ids, and where each row was bootstrapped from."""

    features: np.ndarray
    ids: np.ndarray  # n, S22
    base: np.ndarray  # n, row of the real song it copies
    popularity: np.ndarray
    real: list[Song]
    artist_seed: int = 7
    artists: str = "random"  # or "coherent" (see the module docs)
    _near: np.ndarray | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def records(self) -> Iterator[SongRecord]:
        """The catalog as the feature table would hand it to the recommender (streamed)."""
        real = self.real
        # Like emergify_cli.synthetic_catalog: a synthetic song's artists are drawn from the
        # real artist pool (85% one, else two), not copied from the song it bootstraps, so
        # near-identical copies of a song do not all share one artist.
        pool = [a for s in real for a in s.artists]
        rng = np.random.default_rng(self.artist_seed)
        first = rng.integers(0, len(pool), size=len(self))
        second = rng.integers(0, len(pool), size=len(self))
        two = rng.random(len(self)) >= 0.85
        near = self.nearest_real() if self.artists == "coherent" else None
        for i in range(len(self)):
            b = real[int(self.base[i])]
            if i < len(real):
                artists = tuple(b.artists)
            elif near is not None:
                artists = tuple(real[int(near[i])].artists)
            elif two[i] and first[i] != second[i]:
                artists = (pool[first[i]], pool[second[i]])
            else:
                artists = (pool[first[i]],)
            yield SongRecord(
                track_id=self.ids[i].decode(),
                name=b.name if i < len(real) else f"{b.name} (synthetic {i})",
                artists=artists,
                features=tuple(self.features[i].tolist()),
                table_version=1,
                album=b.album,
                popularity=int(self.popularity[i]),
            )

    def nearest_real(self) -> np.ndarray:
        """Per row, the real song nearest to it (L1 on features standardized by the real
        songs' statistics)."""
        if self._near is not None:
            return self._near
        from sklearn.neighbors import NearestNeighbors

        x = np.array([s.features() for s in self.real], dtype=np.float64)
        mean, std = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        nn = NearestNeighbors(n_neighbors=1, metric="manhattan").fit((x - mean) / std)
        out = np.empty(len(self), dtype=np.int64)
        step = 200_000
        for lo in range(0, len(self), step):
            part = (self.features[lo : lo + step] - mean) / std
            out[lo : lo + step] = nn.kneighbors(part, return_distance=False)[:, 0]
        self._near = out
        return out

    def profiles(self, model: PortableModel) -> ArtistProfiles:
        """Every artist's profile under ``model``, as the batch layer computes it."""
        keys = [artist_keys(r.artists, r.artist_ids) for r in self.records()]
        return artist_profiles(model.standardize(self.features), keys)


#: How synthetic songs get artists (see the module docs).
ARTIST_MODES = ("random", "coherent")
#: The catalog shapes (see the module docs).
SHAPES = ("bootstrap5", "bootstrap30", "marginals", "mixture")
_MIXTURE_COMPONENTS = 16


@functools.lru_cache(maxsize=2)
def _fitted_mixture(data: bytes, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """The mixture fitted to the real features (``data``: their bytes), fitted once per
    process: a catalog generated in parts (bench/scale_end_to_end.py) samples it per part."""
    from sklearn.mixture import GaussianMixture

    x = np.frombuffer(data, dtype=np.float64).reshape(shape)
    return GaussianMixture(_MIXTURE_COMPONENTS, covariance_type="full", random_state=7).fit(x)


def _extra_features(
    x: np.ndarray, base: np.ndarray, shape: str, rng: np.random.Generator
) -> np.ndarray:
    """Features of the synthetic rows (``base``: the real row each one starts from)."""
    count, std = base.size, x.std(0)
    if shape in ("bootstrap5", "bootstrap30"):
        noise = 0.05 if shape == "bootstrap5" else 0.30
        return x[base] + rng.normal(0.0, 1.0, size=(count, x.shape[1])) * (noise * std)
    if shape == "marginals":
        picks = rng.integers(0, x.shape[0], size=(count, x.shape[1]))
        drawn = np.take_along_axis(x, picks, axis=0)
        return drawn + rng.normal(0.0, 1.0, size=drawn.shape) * (0.05 * std)
    if shape == "mixture":
        gm = _fitted_mixture(x.tobytes(), x.shape)
        out = np.empty((count, x.shape[1]))
        step = 1_000_000  # sample() materialises its output; chunks keep 10M within memory
        for start in range(0, count, step):
            part = min(step, count - start)
            gm.set_params(random_state=int(rng.integers(2**31)))
            drawn, _ = gm.sample(part)
            out[start : start + part] = drawn[rng.permutation(part)]  # sample() groups by component
        return out
    raise ValueError(f"unknown catalog shape {shape!r}: one of {', '.join(SHAPES)}")


def synthetic_catalog(
    n: int, seed: int = 7, noise: float = 0.05, shape: str | None = None
) -> Catalog:
    """``n`` songs: the real ones first (when n >= 4,470 the real catalog is included as is),
    then songs of ``shape`` (default: bootstrap with ``noise``, 0.05 = ``bootstrap5``)."""
    shape = shape or ("bootstrap5" if noise == 0.05 else "bootstrap30" if noise == 0.30 else "")
    real = real_songs()
    x = np.array([s.features() for s in real], dtype=np.float64)
    rng = np.random.default_rng(seed)
    m = len(real)
    if n <= m:
        base = np.arange(n)
        features = x[:n].copy()
    else:
        base = np.concatenate([np.arange(m), rng.integers(0, m, size=n - m)])
        if shape:
            extra = _extra_features(x, base[m:], shape, rng)
        else:
            extra = x[base[m:]] + rng.normal(0.0, 1.0, size=(n - m, x.shape[1])) * (
                noise * x.std(0)
            )
        lo = np.array(
            [0.0 if f in _UNIT else (-60.0 if f == "loudness" else 0.0) for f in AUDIO_FEATURES]
        )
        hi = np.array(
            [1.0 if f in _UNIT else (5.0 if f == "loudness" else np.inf) for f in AUDIO_FEATURES]
        )
        features = np.concatenate([x, np.round(np.clip(extra, lo, hi), 6)])
    ids = _BASE62[rng.integers(0, 62, size=(n, 22))].view("S22").reshape(n)
    real_ids = np.array([s.track_id.encode() for s in real[: min(n, m)]], dtype="S22")
    ids[: real_ids.size] = real_ids
    real_pop = np.array([-1 if s.popularity is None else s.popularity for s in real])
    popularity = np.where(
        np.arange(n) < m, real_pop[base], np.minimum(100, rng.exponential(8.0, size=n).astype(int))
    )
    return Catalog(features=features, ids=ids, base=base, popularity=popularity, real=real)


def fit_model(
    x: np.ndarray,
    k: int,
    version: int = 1,
    n_components: int = 5,
    sample: int = 100_000,
    seed: int = 7,
) -> PortableModel:
    """StandardScaler (sample std, as Spark) -> PCA -> KMeans (scikit-learn, k-means++,
    fitted on at most ``sample`` rows), as a portable model."""
    from sklearn.cluster import KMeans

    means = x.mean(axis=0)
    scales = x.std(axis=0, ddof=1)
    scales = np.where(scales > 0, scales, 1.0)
    z = (x - means) / scales
    rng = np.random.default_rng(seed)
    fit_rows = z if len(z) <= sample else z[rng.choice(len(z), size=sample, replace=False)]
    centre = fit_rows.mean(axis=0)
    _, s, vt = np.linalg.svd(fit_rows - centre, full_matrices=False)
    components = vt[:n_components].T
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit_rows @ components)
    variance = s**2 / (s**2).sum()
    return PortableModel(
        version=version,
        trained_at=datetime.now(UTC),
        means=means.tolist(),
        scales=scales.tolist(),
        components=components.tolist(),
        centroids=km.cluster_centers_.tolist(),
        k=k,
        silhouette=0.0,
        songs=len(x),
        explained_variance=variance[:n_components].tolist(),
    )


def k_for(n: int) -> int:
    """Clusters for a catalog of ``n`` songs: grows slowly with the catalog (8 at 4,470,
    ~17 at 100k, ~24 at 1M), like the batch layer's silhouette search range."""
    return int(max(4, round(2 * np.log2(max(n, 2)) - 16)))
