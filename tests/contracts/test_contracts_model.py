"""PortableModel owns standardize -> project -> assign, in one stated feature order."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from emergify_contracts.model import FEATURE_ORDER, PortableModel
from emergify_contracts.song import AUDIO_FEATURES


def model(features: list[str], means, scales, components, centroids) -> PortableModel:
    return PortableModel(
        version=1,
        trained_at=datetime(2025, 1, 1, tzinfo=UTC),
        features=features,
        means=list(means),
        scales=list(scales),
        components=np.asarray(components).tolist(),
        centroids=np.asarray(centroids).tolist(),
        k=len(centroids),
        silhouette=0.5,
        songs=100,
    )


def test_methods_follow_the_arithmetic_of_spark_pipeline() -> None:
    rng = np.random.default_rng(7)
    means, scales = rng.normal(size=9), rng.uniform(0.5, 3, size=9)
    components, centroids = rng.normal(size=(9, 4)), rng.normal(size=(12, 4))
    m = model(list(AUDIO_FEATURES), means, scales, components, centroids)
    x = rng.normal(size=(3000, 9))
    z = (x - means) / scales
    p = z @ components
    brute = ((p[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.allclose(m.standardize(x), z)
    assert np.allclose(m.project(m.standardize(x)), p)
    assert np.array_equal(m.assign(x), brute)
    assert np.array_equal(m.nearest_centroid(p), brute)
    assert m.assign(x[0]).tolist() == [brute[0]]  # one song as a flat vector
    assert m.assign(np.empty((0, 9))).shape == (0,)


def test_a_model_trained_in_another_feature_order_gives_the_same_clusters() -> None:
    rng = np.random.default_rng(11)
    means, scales = rng.normal(size=9), rng.uniform(0.5, 3, size=9)
    components, centroids = rng.normal(size=(9, 3)), rng.normal(size=(6, 3))
    ours = model(list(FEATURE_ORDER), means, scales, components, centroids)
    perm = rng.permutation(9)
    shuffled = model(
        [FEATURE_ORDER[i] for i in perm], means[perm], scales[perm], components[perm], centroids
    )
    x = rng.normal(size=(500, 9))  # always FEATURE_ORDER columns
    assert np.allclose(shuffled.standardize(x), ours.standardize(x))
    assert np.array_equal(shuffled.assign(x), ours.assign(x))


def test_a_constant_feature_standardizes_to_zero() -> None:
    scales = [1.0] * 9
    scales[3] = 0.0
    m = model(list(AUDIO_FEATURES), [0.5] * 9, scales, np.eye(9)[:, :2], [[0, 0], [1, 1]])
    assert m.standardize(np.full(9, 0.5))[3] == 0.0


def test_an_artifact_of_the_wrong_shape_is_refused_with_the_reason() -> None:
    m = model(list(AUDIO_FEATURES), [0] * 9, [1] * 9, np.eye(9)[:, :2], [[0, 0, 0]])
    with pytest.raises(ValueError, match="centroids must be k x pcs"):
        m.assign(np.zeros((1, 9)))
    lacking = model(list(AUDIO_FEATURES[:8]), [0] * 8, [1] * 8, np.eye(8)[:, :2], [[0, 0]])
    with pytest.raises(ValueError, match="lacks features: tempo"):
        lacking.standardize(np.zeros(9))
