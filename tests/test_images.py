"""Image batches: official pickle / npz fixtures in tmp_path, normalisation, seeding, untrusted input."""
from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.errors import ZcpError
from evaluation.images import NORMALISATION, ImageBatch, available_sources, load_batch
from evaluation.paths import DataPaths, resolve_paths

# Written out here, not imported, so a typo in the module is caught: xautodl get_datasets(), 0..255 units.
XAUTODL_MEAN_STD = {
    "cifar10": ([125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    "cifar100": ([129.3, 124.1, 112.4], [68.2, 65.4, 70.4]),
    "ImageNet16-120": ([122.68, 116.66, 104.01], [63.22, 61.26, 65.09]),
}
SIZE = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` opcodes, as in the official CIFAR and ImageNet16 files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle as Python 2 + numpy 1 wrote it (str opcodes, ``numpy.core`` module names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


def planar(images_nchw: np.ndarray) -> np.ndarray:
    return images_nchw.reshape(len(images_nchw), -1)


def make_paths(root: Path) -> DataPaths:
    return DataPaths(
        data_dir=root / "data",
        tss_archive=root / "none",
        sss_archive=root / "none",
        tss_table=root / "none",
        sss_table=root / "none",
        nb101_table=root / "none",
        cifar_dir=root / "cifar",
        imagenet16_dir=root / "ImageNet16",
    )


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def write_cifar10(paths: DataPaths, images: np.ndarray, labels: list[int]) -> Path:
    path = paths.cifar_dir / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": planar(images),
             b"filenames": [b"x.png"] * len(labels)}
    path.write_bytes(py2_pickle(entry))
    return path


def write_cifar100(paths: DataPaths, images: np.ndarray, fine: list[int]) -> Path:
    """Written by modern Python 3 / numpy 2 (bytes keys, protocol 5) to cover that spelling too."""
    path = paths.cifar_dir / "cifar-100-python" / "test"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {b"filenames": [b"x.png"] * len(fine), b"fine_labels": fine, b"coarse_labels": [0] * len(fine),
             b"data": planar(images)}
    path.write_bytes(pickle.dumps(entry, protocol=5))
    return path


def write_imagenet16(paths: DataPaths, images: np.ndarray, labels: list[int], name: str = "val_data") -> Path:
    path = paths.imagenet16_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle({b"data": planar(images), b"labels": labels}))
    return path


def write_npz(paths: DataPaths, name: str, **arrays: np.ndarray) -> Path:
    path = paths.data_dir / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def expected(images_nchw: np.ndarray, dataset: str) -> np.ndarray:
    mean, std = (np.array(v).reshape(1, 3, 1, 1) for v in XAUTODL_MEAN_STD[dataset])
    return (images_nchw / 255.0 - mean / 255.0) / (std / 255.0)


def check_batch(batch: ImageBatch, images_nchw: np.ndarray, dataset: str) -> None:
    size = SIZE[dataset]
    assert batch.images.dtype == torch.float32 and batch.labels.dtype == torch.int64
    assert batch.images.shape == (len(batch.indices), 3, size, size)
    np.testing.assert_allclose(batch.images.numpy(), expected(images_nchw[batch.indices.numpy()], dataset), atol=1e-5)


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    return make_paths(tmp_path)


def test_normalisation_constants_are_xautodls() -> None:
    assert {k: (list(m), list(s)) for k, (m, s) in NORMALISATION.items()} == XAUTODL_MEAN_STD


def test_cifar10_python2_pickle(paths: DataPaths) -> None:
    images = random_images(12, 32)
    labels = [i % 10 for i in range(12)]
    path = write_cifar10(paths, images, labels)
    batch = load_batch("cifar10", 5, seed=1, source="pickle", paths=paths)
    check_batch(batch, images, "cifar10")
    assert batch.labels.tolist() == [labels[i] for i in batch.indices.tolist()]
    assert (batch.source, batch.origin, batch.dataset) == ("pickle", path, "cifar10")


def test_cifar100_python3_pickle_uses_fine_labels(paths: DataPaths) -> None:
    images = random_images(10, 32)
    fine = [99 - i for i in range(10)]
    write_cifar100(paths, images, fine)
    batch = load_batch("cifar100", 10, seed=0, source="pickle", paths=paths)
    check_batch(batch, images, "cifar100")
    assert sorted(batch.indices.tolist()) == list(range(10))
    assert batch.labels.tolist() == [fine[i] for i in batch.indices.tolist()]


def test_imagenet16_pickle_keeps_the_120_classes_and_shifts_labels(paths: DataPaths) -> None:
    images = random_images(8, 16)
    labels = [1, 500, 120, 121, 7, 1000, 60, 2]  # 1-based; 5 of them in 1..120
    write_imagenet16(paths, images, labels)
    batch = load_batch("ImageNet16-120", 5, seed=3, source="pickle", paths=paths)
    check_batch(batch, images, "ImageNet16-120")
    assert sorted(batch.indices.tolist()) == [0, 2, 4, 6, 7]
    assert batch.labels.tolist() == [labels[i] - 1 for i in batch.indices.tolist()]
    with pytest.raises(ZcpError, match="larger than the 5 images"):
        load_batch("ImageNet16-120", 6, seed=3, source="pickle", paths=paths)


def test_imagenet16_pickle_falls_back_to_a_train_batch(paths: DataPaths) -> None:
    path = write_imagenet16(paths, random_images(4, 16), [1, 2, 3, 4], name="train_data_batch_3")
    assert load_batch("ImageNet16-120", 4, seed=0, paths=paths).origin == path


def test_npz_is_nhwc(paths: DataPaths) -> None:
    images = random_images(9, 32)
    write_npz(paths, "cifar10_test_1017.npz", images=images.transpose(0, 2, 3, 1), labels=np.arange(9) % 10)
    batch = load_batch("cifar10", 4, seed=5, source="npz", paths=paths)
    check_batch(batch, images, "cifar10")
    assert batch.labels.tolist() == batch.indices.tolist()


def test_imagenet16_npz_labels_outside_subset_are_minus_one(paths: DataPaths) -> None:
    images = random_images(6, 16)
    labels = np.array([5, 300, 120, 121, 999, 1], dtype=np.int32)
    write_npz(paths, "imagenet16_train_960.npz", images=images.transpose(0, 2, 3, 1), labels=labels)
    everything = load_batch("ImageNet16-120", 6, seed=0, paths=paths)
    assert everything.source == "npz"
    assert dict(zip(everything.indices.tolist(), everything.labels.tolist())) == {0: 4, 1: -1, 2: 119, 3: -1, 4: -1, 5: 0}
    labelled = load_batch("ImageNet16-120", 3, seed=0, paths=paths, labelled_only=True)
    assert sorted(labelled.indices.tolist()) == [0, 2, 5] and (labelled.labels >= 0).all()
    with pytest.raises(ZcpError, match="larger than the 3 images with a label in the 120 classes"):
        load_batch("ImageNet16-120", 4, seed=0, paths=paths, labelled_only=True)


@pytest.mark.parametrize("dataset", list(SIZE))
def test_pixels_at_the_dataset_mean_normalise_to_zero(paths: DataPaths, dataset: str) -> None:
    size = SIZE[dataset]
    mean = np.rint(XAUTODL_MEAN_STD[dataset][0]).astype(np.uint8)
    images = np.broadcast_to(mean.reshape(1, 3, 1, 1), (4, 3, size, size))
    write_npz(paths, {"cifar10": "cifar10_test_1017.npz", "cifar100": "cifar100_test_916.npz",
                      "ImageNet16-120": "imagenet16_train_960.npz"}[dataset],
              images=images.transpose(0, 2, 3, 1), labels=np.ones(4, dtype=np.int64), fine_labels=np.ones(4, dtype=np.int64))
    batch = load_batch(dataset, 4, seed=0, source="npz", paths=paths)
    assert batch.images.mean(dim=(0, 2, 3)).abs().max() < 0.01  # rounding the mean to a pixel value costs < 0.5/62


def test_same_seed_same_batch_other_seed_other_batch(paths: DataPaths) -> None:
    images = random_images(50, 32)
    write_cifar10(paths, images, [0] * 50)
    first, again = (load_batch("cifar10", 8, seed=7, paths=paths) for _ in range(2))
    other = load_batch("cifar10", 8, seed=8, paths=paths)
    assert torch.equal(first.indices, again.indices) and torch.equal(first.images, again.images)
    assert not torch.equal(first.indices, other.indices)
    assert len(set(first.indices.tolist())) == 8  # without replacement
    np.testing.assert_array_equal(first.indices.numpy(), np.random.default_rng(7).choice(50, 8, replace=False))


def test_gaussian(paths: DataPaths) -> None:
    batch = load_batch("cifar100", 32, seed=2, source="gaussian", paths=paths)
    assert batch.images.shape == (32, 3, 32, 32) and batch.images.dtype == torch.float32
    assert abs(batch.images.mean().item()) < 0.02 and abs(batch.images.std().item() - 1) < 0.02
    assert batch.labels.dtype == torch.int64 and 0 <= batch.labels.min() and batch.labels.max() < 100
    assert (batch.indices, batch.origin, batch.source) == (None, None, "gaussian")
    assert torch.equal(batch.images, load_batch("cifar100", 32, seed=2, source="gaussian", paths=paths).images)
    assert load_batch("ImageNet16-120", 2, seed=2, source="gaussian", paths=paths).images.shape == (2, 3, 16, 16)


def test_auto_prefers_pickle_and_available_sources_reports(paths: DataPaths) -> None:
    npz = write_npz(paths, "cifar10_test_1017.npz", images=np.zeros((3, 32, 32, 3), np.uint8), labels=np.zeros(3, np.int64))
    assert load_batch("cifar10", 1, seed=0, paths=paths).source == "npz"
    pkl = write_cifar10(paths, random_images(3, 32), [1, 2, 3])
    assert load_batch("cifar10", 1, seed=0, paths=paths).source == "pickle"
    found = available_sources(paths)
    assert found["cifar10"] == {"pickle": str(pkl), "npz": str(npz), "auto": "pickle"}
    assert found["ImageNet16-120"] == {"pickle": None, "npz": None, "auto": None}


MARKER_PICKLERS = {
    "os.system": lambda marker: (os.system, (f"touch {marker}",)),
    "builtins.exec": lambda marker: (exec, (f"open({str(marker)!r}, 'w').close()",)),
}


@pytest.mark.parametrize("name", list(MARKER_PICKLERS))
def test_restricted_unpickler_refuses_code(paths: DataPaths, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return MARKER_PICKLERS[name](marker)

    path = paths.cifar_dir / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ZcpError, match=f"refusing to load {path}.*{name.split('.')[1]}"):
        load_batch("cifar10", 1, seed=0, paths=paths)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_codecs(paths: DataPaths) -> None:
    class Zipped:
        def __reduce__(self) -> tuple:
            return codecs.encode, ("x", "zlib")

    write_imagenet16(paths, random_images(1, 16), [1]).write_bytes(pickle.dumps({"data": Zipped()}, protocol=2))
    with pytest.raises(ZcpError, match="refusing to load .*'zlib'"):
        load_batch("ImageNet16-120", 1, seed=0, paths=paths)


GOOD = planar(random_images(4, 32))
BAD_PICKLES = {
    "not a dict": (pickle.dumps([1, 2]), "expected a dict"),
    "no data": (pickle.dumps({"labels": [0]}), "no 'data' entry"),
    "wrong width": (pickle.dumps({"data": GOOD[:, :3000], "labels": [0] * 4}), r"uint8 array \(N, 3072\)"),
    "wrong dtype": (pickle.dumps({"data": GOOD.astype(np.float32), "labels": [0] * 4}), "float32 array"),
    "too few labels": (pickle.dumps({"data": GOOD, "labels": [0] * 3}), "expected 4 integer labels"),
    "float labels": (pickle.dumps({"data": GOOD, "labels": [0.5] * 4}), "expected 4 integer labels"),
    "ragged labels": (pickle.dumps({"data": GOOD, "labels": [[0], [0, 1], 2, 3]}), "not a flat list"),
    "label out of range": (pickle.dumps({"data": GOOD, "labels": [0, 1, 2, 10]}), r"labels must lie in 0\.\.9"),
    "truncated": (pickle.dumps({"data": GOOD, "labels": [0] * 4})[:5000], "corrupt or truncated pickle"),
    "garbage": (b"\x00garbage", "corrupt or truncated pickle"),
}


@pytest.mark.parametrize("case", list(BAD_PICKLES))
def test_bad_pickles(paths: DataPaths, case: str) -> None:
    content, message = BAD_PICKLES[case]
    path = paths.cifar_dir / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ZcpError, match=message) as err:
        load_batch("cifar10", 1, seed=0, source="pickle", paths=paths)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_imagenet16_label_out_of_file_range(paths: DataPaths) -> None:
    write_imagenet16(paths, random_images(2, 16), [0, 3])  # 0 is impossible for 1-based labels
    with pytest.raises(ZcpError, match=r"labels must lie in 1\.\.1000"):
        load_batch("ImageNet16-120", 1, seed=0, paths=paths)


BAD_NPZ = {
    "missing key": (dict(images=np.zeros((2, 32, 32, 3), np.uint8)), "has no 'labels' array"),
    "nchw": (dict(images=np.zeros((2, 3, 32, 32), np.uint8), labels=np.zeros(2, np.int64)), r"\(N, 32, 32, 3\)"),
    "int16 pixels": (dict(images=np.zeros((2, 32, 32, 3), np.int16), labels=np.zeros(2, np.int64)), "int16 array"),
    "label count": (dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(3, np.int64)), "expected 2 integer labels"),
    "object array": (dict(images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0, None])), "corrupt or truncated npz"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz(paths: DataPaths, case: str) -> None:
    arrays, message = BAD_NPZ[case]
    write_npz(paths, "cifar10_test_1017.npz", **arrays)
    with pytest.raises(ZcpError, match=message):
        load_batch("cifar10", 1, seed=0, source="npz", paths=paths)


def npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize("case", ["truncated zip", "not an npz", "single npy"])
def test_corrupt_npz(paths: DataPaths, case: str) -> None:
    path = write_npz(paths, "cifar10_test_1017.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2, np.int64))
    content = {"truncated zip": path.read_bytes()[:200], "not an npz": b"not an npz at all", "single npy": npy_bytes()}
    path.write_bytes(content[case])
    with pytest.raises(ZcpError, match=f"cannot read {path}"):
        load_batch("cifar10", 1, seed=0, source="npz", paths=paths)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dataset="cifar10-valid"), "unknown dataset 'cifar10-valid'"),
        (dict(source="web"), "unknown image source 'web'"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=2.0), "batch_size must be an integer >= 1"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(batch_size=4), "batch_size 4 is larger than the 3 images"),
    ],
)
def test_bad_arguments(paths: DataPaths, kwargs: dict, message: str) -> None:
    write_cifar10(paths, random_images(3, 32), [0, 1, 2])
    args = dict(dataset="cifar10", batch_size=1, seed=0, paths=paths) | kwargs
    with pytest.raises(ZcpError, match=message):
        load_batch(**args)


@pytest.mark.parametrize(
    ("dataset", "source", "hints"),
    [
        ("cifar10", "pickle", ["cifar-10-batches-py/test_batch", "--cifar-dir", "ZCP_CIFAR_DIR"]),
        ("ImageNet16-120", "pickle", ["val_data", "--imagenet16-dir", "ZCP_IMAGENET16_DIR"]),
        ("cifar100", "npz", ["cifar100_test_916.npz", "--data-dir", "ZCP_DATA_DIR"]),
        ("cifar100", "auto", ["cifar-100-python/test", "ZCP_CIFAR_DIR", "ZCP_DATA_DIR", "gaussian"]),
    ],
)
def test_missing_files_say_where_and_how(paths: DataPaths, dataset: str, source: str, hints: list[str]) -> None:
    with pytest.raises(ZcpError) as err:
        load_batch(dataset, 1, seed=0, source=source, paths=paths)
    assert all(h in str(err.value) for h in hints) and "\n" not in str(err.value)


REAL = {"cifar10": 1017, "cifar100": 916, "ImageNet16-120": 960}


@pytest.mark.parametrize("dataset", list(REAL))
def test_real_shared_npz(dataset: str) -> None:
    real = resolve_paths()
    if not (real.data_dir / "images").is_dir():
        pytest.skip(f"no shared image batches at {real.data_dir / 'images'} (set ZCP_DATA_DIR to the shared data)")
    full = load_batch(dataset, REAL[dataset], seed=0, source="npz", paths=real)
    assert full.images.shape == (REAL[dataset], 3, SIZE[dataset], SIZE[dataset])
    assert full.images.mean(dim=(0, 2, 3)).abs().max() < 0.3  # the dataset constants fit the real pixels
    assert (full.images.std(dim=(0, 2, 3)) - 1).abs().max() < 0.2
    with pytest.raises(ZcpError, match="larger than"):
        load_batch(dataset, REAL[dataset] + 1, seed=0, source="npz", paths=real)
    if dataset == "cifar10":  # the official test set starts with cat, ship, ship, airplane, frog
        order = full.indices.argsort()
        assert full.labels[order][:5].tolist() == [3, 8, 8, 0, 6]
    if dataset == "ImageNet16-120":
        assert (full.labels >= 0).sum() == 106
        assert load_batch(dataset, 106, seed=0, source="npz", paths=real, labelled_only=True).labels.min() >= 0
