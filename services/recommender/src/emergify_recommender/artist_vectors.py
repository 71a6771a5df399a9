"""Songs' artist vectors for the blended distance (docs/similarity.md, "Recommender").

The served model version's artist profiles (running sums and counts, as the batch and speed
layers write them) and a **combination table**: one row per distinct credit list (most
songs have one artist, so the table is about the artist count), holding that list's artist
vector under the multi-artist rule. Each song keeps an int32 row into it (in the search
cells), not a vector of its own.

A song none of whose artists has a profile yet (a features-only seed, or a race before its
profile arrives) gets a combination row of its own holding its own ``z``: exactly what a
one-song artist's profile is. It keeps that row until the next full load; when one of its
artists gains a profile, the row is recomputed from the profiles like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emergify_contracts.artist_profiles import (
    MULTI_ARTIST_RULES,
    PROFILE_FEATURES,
    ArtistProfiles,
    MultiArtistRule,
    song_artist_vectors,
)
from emergify_contracts.settings import EmergifySettings

N_ARTIST = len(PROFILE_FEATURES)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ArtistVectors:
    """Profiles of one model version and the combination table built on them. Never changes
    after it is built: updates return a new one (the arrays of the old one stay valid)."""

    model_version: int | None
    rule: MultiArtistRule
    profiles: ArtistProfiles
    position: dict[str, int]  # artist key -> profile row
    combos: tuple[tuple[str, ...], ...]  # per combination: its artist keys, credit order
    by_credits: dict[tuple[str, ...], int]  # credit list -> combination (profile-backed ones)
    own: dict[int, np.ndarray]  # combination -> the one song's own z (no profile at the time)
    vectors: np.ndarray  # combinations x 9, float64: the artist vector of each
    vectors32: np.ndarray  # the same in float32 (the kernel's estimates)
    abs_max: np.ndarray  # 9: the largest |value| of ``vectors`` (bounds the estimate error)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays (the key dictionaries are small next to them)."""
        p = self.profiles
        return self.vectors.nbytes + self.vectors32.nbytes + p.sums.nbytes + p.counts.nbytes

    def __len__(self) -> int:
        return len(self.combos)

    def has_profile(self, keys: Iterable[str]) -> bool:
        """Whether any of ``keys`` has a profile with at least one song."""
        counts = self.profiles.counts
        return any((r := self.position.get(k)) is not None and counts[r] > 0 for k in keys)

    def assign(
        self, credits: Sequence[tuple[str, ...]], z: np.ndarray
    ) -> tuple[ArtistVectors, np.ndarray]:
        """Combination rows for songs with artist keys ``credits`` and standardized ``z``
        (n x 9); new combinations are added. Returns the new table and the rows (int32)."""
        rows = np.empty(len(credits), dtype=np.int32)
        by_credits = dict(self.by_credits)
        new_keys: list[tuple[str, ...]] = []
        new_own: dict[int, np.ndarray] = {}
        base = len(self.combos)
        for i, keys in enumerate(credits):
            row = by_credits.get(keys)
            if row is None:
                row = base + len(new_keys)
                new_keys.append(keys)
                if self.has_profile(keys):
                    by_credits[keys] = row
                else:
                    new_own[row] = np.array(z[i], dtype=np.float64)
            rows[i] = row
        if not new_keys:
            return self, rows
        own = {**self.own, **new_own}
        fresh = self._computed(new_keys, [new_own.get(base + j) for j in range(len(new_keys))])
        return self._with(
            combos=self.combos + tuple(new_keys),
            by_credits=by_credits,
            own=own,
            vectors=np.vstack([self.vectors, fresh]),
        ), rows

    def with_profiles(self, changed: ArtistProfiles) -> tuple[ArtistVectors, np.ndarray]:
        """The table after the profiles of ``changed.keys`` were replaced by its rows (new
        artists are added): those profiles and every combination crediting one of them are
        recomputed. Returns it and the combination rows whose vectors changed."""
        if not changed.keys:
            return self, np.empty(0, dtype=np.int64)
        p = self.profiles
        keys = list(p.keys)
        position = dict(self.position)
        sums = p.sums.copy()
        counts = p.counts.copy()
        extra_sums, extra_counts = [], []
        for i, key in enumerate(changed.keys):
            row = position.get(key)
            if row is None:
                position[key] = len(keys)
                keys.append(key)
                extra_sums.append(changed.sums[i])
                extra_counts.append(changed.counts[i])
            else:
                sums[row] = changed.sums[i]
                counts[row] = changed.counts[i]
        if extra_sums:
            sums = np.vstack([sums, np.array(extra_sums).reshape(-1, N_ARTIST)])
            counts = np.concatenate([counts, np.array(extra_counts, dtype=np.int64)])
        profiles = ArtistProfiles(tuple(keys), sums, counts)
        touched = set(changed.keys)
        affected = [c for c, combo in enumerate(self.combos) if touched.intersection(combo)]
        table = self._with(profiles=profiles, position=position)
        if not affected:
            return table, np.empty(0, dtype=np.int64)
        vectors = self.vectors.copy()
        vectors[affected] = table._computed(
            [self.combos[c] for c in affected], [self.own.get(c) for c in affected]
        )
        return table._with(vectors=vectors), np.asarray(affected, dtype=np.int64)

    def _computed(
        self, combos: Sequence[tuple[str, ...]], own: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        """The artist vectors of ``combos`` under the rule; a combination none of whose
        artists has a profile gets its ``own`` z (zeros if it has none)."""
        fallback = np.array(
            [np.zeros(N_ARTIST) if o is None else o for o in own], dtype=np.float64
        ).reshape(len(combos), N_ARTIST)
        return song_artist_vectors(self.profiles, combos, self.rule, fallback)

    def _with(self, **changes: object) -> ArtistVectors:
        fields = {
            "model_version": self.model_version,
            "rule": self.rule,
            "profiles": self.profiles,
            "position": self.position,
            "combos": self.combos,
            "by_credits": self.by_credits,
            "own": self.own,
            "vectors": self.vectors,
        }
        fields.update(changes)
        vectors = np.ascontiguousarray(fields.pop("vectors"), dtype=np.float64)
        return ArtistVectors(
            **fields,  # type: ignore[arg-type]
            vectors=_readonly(vectors),
            vectors32=_readonly(vectors.astype(np.float32)),
            abs_max=_readonly(np.abs(vectors).max(axis=0) if len(vectors) else np.zeros(N_ARTIST)),
        )


def artist_vectors(
    profiles: ArtistProfiles, rule: MultiArtistRule, model_version: int | None = None
) -> ArtistVectors:
    """An empty combination table on ``profiles`` (songs are added with
    :meth:`ArtistVectors.assign`)."""
    return ArtistVectors(
        model_version=model_version,
        rule=rule,
        profiles=profiles,
        position=profiles.position(),
        combos=(),
        by_credits={},
        own={},
        vectors=_readonly(np.empty((0, N_ARTIST))),
        vectors32=_readonly(np.empty((0, N_ARTIST), dtype=np.float32)),
        abs_max=_readonly(np.zeros(N_ARTIST)),
    )


@dataclass(frozen=True)
class Similarity:
    """The similarity setting a model version was published with (docs/similarity.md)."""

    artist_weight: float
    multi_artist_rule: MultiArtistRule

    @classmethod
    def of_model(cls, metrics: Mapping[str, Any] | None, fallback: Similarity) -> Similarity:
        """The setting stored in a model's metrics (``similarity``), else ``fallback`` (a
        model published before the setting was stored)."""
        stored = (metrics or {}).get("similarity")
        if not isinstance(stored, Mapping):
            return fallback
        weight = stored.get("artist_weight", fallback.artist_weight)
        rule = stored.get("multi_artist_rule", fallback.multi_artist_rule)
        if not isinstance(weight, int | float) or weight < 0 or rule not in MULTI_ARTIST_RULES:
            return fallback
        return cls(float(weight), rule)

    def as_dict(self) -> dict[str, Any]:
        return {"artist_weight": self.artist_weight, "multi_artist_rule": self.multi_artist_rule}


def _default_similarity() -> Similarity:
    fields = EmergifySettings.model_fields
    return Similarity(
        float(fields["similarity_artist_weight"].default),
        fields["similarity_multi_artist_rule"].default,
    )


#: The settings' defaults (EMERGIFY_SIMILARITY_*), for a model that stored no setting.
DEFAULT_SIMILARITY = _default_similarity()
