"""The synthetic identity dataset: determinism, degradations with known truth, pairs, separability."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from qualiface.data.synthetic import DEGRADATIONS, SyntheticFaces, degrade, make_pairs

SIZE = 32


def _high_freq(image: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels (a high-frequency energy proxy)."""
    x = image.astype(np.float64)
    return float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean())


@pytest.fixture(scope="module")
def clean_image() -> np.ndarray:
    return SyntheticFaces(2, 2, size=64, seed=5, degradations=()).clean_image(1)


def test_items_shape_dtype_label_and_info() -> None:
    ds = SyntheticFaces(4, 3, size=SIZE, seed=1)
    assert len(ds) == 12
    assert ds.num_classes == 4
    for index in range(len(ds)):
        image, label, info = ds[index]
        assert image.dtype == np.uint8
        assert image.shape == (SIZE, SIZE, 3)
        assert label == index // 3 == ds.label(index)
        assert 0 <= label < 4
        assert set(info) == {"degradation", "severity", "quality_truth"}
        assert info["degradation"] in DEGRADATIONS
        assert 0.0 <= info["severity"] <= 1.0
        assert info["quality_truth"] == pytest.approx(1.0 - info["severity"])
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(4), 3))


def test_same_seed_identical_bytes_different_seed_differs() -> None:
    a = SyntheticFaces(3, 2, size=SIZE, seed=7)
    b = SyntheticFaces(3, 2, size=SIZE, seed=7)
    c = SyntheticFaces(3, 2, size=SIZE, seed=8)
    for index in range(len(a)):
        assert a[index][0].tobytes() == b[index][0].tobytes()
        assert a[index][2] == b[index][2]
        assert a[index][0].tobytes() != c[index][0].tobytes()


def test_independent_of_access_order_process_and_dataset_size() -> None:
    forward = SyntheticFaces(3, 4, size=SIZE, seed=3)
    expected = [forward[i][0] for i in range(len(forward))]
    shuffled = SyntheticFaces(3, 4, size=SIZE, seed=3)
    for index in np.random.default_rng(0).permutation(len(shuffled)):
        np.testing.assert_array_equal(shuffled[int(index)][0], expected[index])
    clone = pickle.loads(pickle.dumps(forward))  # as a DataLoader worker would get it
    np.testing.assert_array_equal(clone[5][0], expected[5])
    larger = SyntheticFaces(6, 4, size=SIZE, seed=3)  # identity k does not depend on how many there are
    for index in range(len(forward)):
        np.testing.assert_array_equal(larger[index][0], expected[index])
    np.testing.assert_array_equal(forward[-1][0], expected[-1])


def test_quality_truth_matches_items_and_clean_fraction() -> None:
    ds = SyntheticFaces(3, 4, size=SIZE, seed=2, clean_fraction=0.5)
    truth = ds.quality_truth
    assert truth.shape == (12,)
    for index in range(len(ds)):
        info = ds[index][2]
        assert truth[index] == pytest.approx(info["quality_truth"])
        assert ds.spec(index).quality_truth == pytest.approx(info["quality_truth"])
    assert (SyntheticFaces(3, 4, size=SIZE, seed=2, clean_fraction=1.0).quality_truth == 1.0).all()
    assert (SyntheticFaces(3, 4, size=SIZE, seed=2, degradations=()).quality_truth == 1.0).all()
    high = SyntheticFaces(3, 4, size=SIZE, seed=2, severity_range=(0.7, 0.9)).quality_truth
    assert ((high >= 0.1 - 1e-12) & (high <= 0.3 + 1e-12)).all()


def test_severity_zero_is_the_clean_image(clean_image: np.ndarray) -> None:
    ds = SyntheticFaces(3, 4, size=SIZE, seed=4, severity_range=(0.0, 0.0))
    for index in range(len(ds)):
        image, _, info = ds[index]
        assert info["severity"] == 0.0
        np.testing.assert_array_equal(image, ds.clean_image(index))
    for kind in (*DEGRADATIONS, "none"):
        out, box = degrade(clean_image, kind, 0.0, np.random.default_rng(0))
        np.testing.assert_array_equal(out, clean_image)
        assert box is None


@pytest.mark.parametrize("kind", ["blur", "lowres"])
def test_blur_and_lowres_remove_detail_monotonically(clean_image: np.ndarray, kind: str) -> None:
    energies = [_high_freq(degrade(clean_image, kind, s, np.random.default_rng(0))[0]) for s in (0.0, 0.4, 1.0)]
    assert energies[0] > energies[1] > energies[2]
    assert energies[2] < 0.5 * energies[0]


def test_noise_raises_variance_of_a_flat_region() -> None:
    flat = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    variances = [degrade(flat, "noise", s, np.random.default_rng(0))[0].astype(float).var() for s in (0.0, 0.3, 1.0)]
    assert variances[0] == 0.0
    assert 0.0 < variances[1] < variances[2]


def test_occlusion_covers_a_rectangle(clean_image: np.ndarray) -> None:
    for seed in range(5):
        out, box = degrade(clean_image, "occlusion", 0.5, np.random.default_rng(seed))
        assert box is not None
        x0, y0, x1, y1 = box
        patch = out[y0:y1, x0:x1].reshape(-1, 3)
        assert (patch == patch[0]).all()  # one colour
        mask = np.ones(out.shape[:2], dtype=bool)
        mask[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(out[mask], clean_image[mask])  # nothing else touched
        assert (x1 - x0) * (y1 - y0) == pytest.approx(0.5 * 0.6 * 64 * 64, rel=0.15)
    ds = SyntheticFaces(2, 8, size=SIZE, seed=0, degradations=("occlusion",), severity_range=(0.5, 0.5))
    image, spec = ds.render(3)
    assert spec.occlusion_box is not None
    x0, y0, x1, y1 = spec.occlusion_box
    assert len(np.unique(image[y0:y1, x0:x1].reshape(-1, 3), axis=0)) == 1
    assert ds.spec(3) == spec


def test_illumination_changes_mean_brightness(clean_image: np.ndarray) -> None:
    base = clean_image.astype(float).mean()
    shifts = []
    for seed in range(6):
        mild = degrade(clean_image, "illumination", 0.3, np.random.default_rng(seed))[0].astype(float).mean()
        strong = degrade(clean_image, "illumination", 1.0, np.random.default_rng(seed))[0].astype(float).mean()
        assert abs(strong - base) > abs(mild - base) > 5.0
        shifts.append(strong - base)
    assert min(shifts) < 0 < max(shifts)  # both darker and brighter samples occur


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown degradations"):
        SyntheticFaces(2, 2, degradations=("fog",))
    with pytest.raises(ValueError, match="severity_range"):
        SyntheticFaces(2, 2, severity_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="seed"):
        SyntheticFaces(2, 2, seed=-1)
    with pytest.raises(ValueError, match="num_identities"):
        SyntheticFaces(0, 2)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticFaces(2, 2, size=SIZE)[4]
    with pytest.raises(ValueError, match="severity"):
        degrade(np.zeros((8, 8, 3), np.uint8), "blur", 1.5, np.random.default_rng(0))


def test_default_collate_and_transform() -> None:
    def to_chw(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0

    ds = SyntheticFaces(2, 3, size=SIZE, seed=0, transform=to_chw)
    images, labels, info = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, SIZE, SIZE)
    assert labels.tolist() == [0, 0, 0, 1]
    assert info["quality_truth"].shape == (4,)
    assert len(info["degradation"]) == 4
    raw = SyntheticFaces(2, 3, size=SIZE, seed=0)
    assert all(raw[i][0].flags.writeable for i in range(len(raw)))  # torch.from_numpy without a warning
    assert next(iter(DataLoader(raw, batch_size=3)))[0].shape == (3, SIZE, SIZE, 3)


def test_pairs_balanced_deterministic_with_truths() -> None:
    ds = SyntheticFaces(5, 4, size=SIZE, seed=1, clean_fraction=0.3)
    pairs = make_pairs(ds, 200, seed=0)
    assert len(pairs) == 200
    assert pairs.issame.sum() == 100
    labels = ds.labels
    same = labels[pairs.index_a] == labels[pairs.index_b]
    np.testing.assert_array_equal(same, pairs.issame)
    assert (pairs.index_a != pairs.index_b).all()
    np.testing.assert_array_equal(pairs.quality_a, ds.quality_truth[pairs.index_a])
    np.testing.assert_array_equal(pairs.pair_quality, np.minimum(pairs.quality_a, pairs.quality_b))
    again = ds.pairs(200, seed=0)
    np.testing.assert_array_equal(again.index_a, pairs.index_a)
    np.testing.assert_array_equal(again.index_b, pairs.index_b)
    assert not np.array_equal(ds.pairs(200, seed=1).index_a, pairs.index_a)
    with pytest.raises(ValueError, match="even"):
        make_pairs(ds, 7)
    with pytest.raises(ValueError, match="at least 2"):
        make_pairs(SyntheticFaces(1, 4), 2)


def _nearest_class_mean_accuracy(num_ids: int, per_id: int, degradations: tuple[str, ...], severity: float) -> float:
    """Class means from the clean first half of each identity; classify the (degraded) second half."""
    clean = SyntheticFaces(num_ids, per_id, size=SIZE, seed=11, degradations=())
    test = SyntheticFaces(
        num_ids, per_id, size=SIZE, seed=11, degradations=degradations, severity_range=(severity, severity)
    )

    def features(ds: SyntheticFaces, indices: np.ndarray) -> np.ndarray:
        crop = ds.images(indices)[:, 6:26, 8:24].astype(np.float64) / 255.0  # the face region
        return crop.reshape(len(indices), 10, 2, 8, 2, 3).mean(axis=(2, 4)).reshape(len(indices), -1)

    labels = clean.labels
    first_half = np.arange(len(clean)) % per_id < per_id // 2
    train, held_out = np.flatnonzero(first_half), np.flatnonzero(~first_half)
    train_features = features(clean, train)
    means = np.stack([train_features[labels[train] == k].mean(axis=0) for k in range(num_ids)])
    distances = ((features(test, held_out)[:, None] - means[None]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == labels[held_out]).mean())


def test_identities_separable_and_degradation_hurts() -> None:
    clean = _nearest_class_mean_accuracy(20, 8, (), 0.0)
    degraded = _nearest_class_mean_accuracy(20, 8, DEGRADATIONS, 1.0)
    print(f"nearest-class-mean accuracy, 20 identities (chance 0.05): clean {clean:.3f}, severity 1 {degraded:.3f}")
    assert clean >= 0.85
    assert degraded <= clean - 0.3
