"""Mini-batches of images for zero-cost proxies, read from the official files, the offline npz, or noise.

Sources (``load_batch(..., source=...)``):

- ``"pickle"``: the official python pickles. CIFAR-10 ``<cifar_dir>/cifar-10-batches-py/test_batch``,
  CIFAR-100 ``<cifar_dir>/cifar-100-python/test`` (fine labels), ImageNet16-120 ``<imagenet16_dir>/val_data``
  (or, if absent, the first present ``train_data_batch_1..10``). Pickles are untrusted: a restricted
  unpickler admits only plain containers, bytes and numpy arrays.
- ``"npz"``: the offline batches in ``<data_dir>/images/`` (see the README there).
- ``"gaussian"``: standard normal noise, i.e. noise in the already-normalised space.
- ``"auto"``: ``"pickle"`` if the official file is present, else ``"npz"``; never noise.

Selection is deterministic: the rows are ``pool[rng.choice(len(pool), batch_size, replace=False)]`` with
``rng = numpy.random.default_rng(seed)``, where ``pool`` lists the eligible rows of the file in file order.
The same (file, seed, batch_size) therefore always gives the same batch, in the same order.

Labels are 0-based int64. ImageNet16-120 is NATS-Bench's 120-class subset of the 1000-class downsampled
ImageNet (file labels 1..120 become 0..119). The official pickle source only ever yields images of those
120 classes, as NATS-Bench does. The offline npz holds training images of all 1000 classes (only 106 of 960
are in the subset): since zero-cost proxies are label-free by default, every image is eligible and images
outside the subset get label -1 (use ``ignore_index=-1`` in a loss); ``labelled_only=True`` keeps only
subset images and fails clearly when fewer than ``batch_size`` exist. Gaussian batches get uniform random
labels in ``0..num_classes-1`` from the same generator.
"""
from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from evaluation.datasets import DATASETS, IMAGE_SIZE, NUM_CLASSES, check_dataset
from evaluation.errors import ZcpError
from evaluation.paths import DataPaths, resolve_paths

try:
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray, numeric as _numeric  # type: ignore[no-redef]

SOURCES = ("auto", "pickle", "npz", "gaussian")

# Per-channel (mean, std) in 0..255 units, as used by NATS-Bench's training code: xautodl 1.0.0,
# xautodl/datasets/get_dataset_with_transform.py, get_datasets(), which applies ToTensor() then
# Normalize([m / 255 for m in mean], [s / 255 for s in std]) (same constants for every ImageNet16 variant).
NORMALISATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    "ImageNet16-120": ((122.68, 116.66, 104.01), (63.22, 61.26, 65.09)),
}

_CIFAR_PICKLE = {"cifar10": ("cifar-10-batches-py/test_batch", "labels"), "cifar100": ("cifar-100-python/test", "fine_labels")}
_IMAGENET16_PICKLES = ("val_data", *(f"train_data_batch_{i}" for i in range(1, 11)))
_NPZ = {
    "cifar10": ("cifar10_test_1017.npz", "labels"),
    "cifar100": ("cifar100_test_916.npz", "fine_labels"),
    "ImageNet16-120": ("imagenet16_train_960.npz", "labels"),
}
_IMAGENET16_FILE_CLASSES = 1000


@dataclass(frozen=True)
class ImageBatch:
    """A normalised mini-batch and where it came from.

    ``images``: float32 (N, 3, H, W); ``labels``: int64 (N,), 0-based, -1 for an image outside the dataset's
    classes (ImageNet16-120 npz only); ``source``: the source actually used ("pickle", "npz" or "gaussian");
    ``indices``: int64 rows of ``origin`` the images are, in batch order (None for gaussian).
    """

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    source: str
    indices: torch.Tensor | None
    origin: Path | None


@dataclass(frozen=True)
class _Pool:
    images: np.ndarray  # uint8 (N, 3, S, S)
    labels: np.ndarray  # int64 (N,), 0-based, -1 outside the dataset's classes
    rows: np.ndarray  # eligible rows, in file order
    origin: Path


def load_batch(
    dataset: str,
    batch_size: int,
    seed: int,
    source: str = "auto",
    paths: DataPaths | None = None,
    labelled_only: bool = False,
) -> ImageBatch:
    """Return ``batch_size`` distinct images of ``dataset`` chosen by ``seed``, normalised as NATS-Bench does.

    ``labelled_only`` keeps only images with a label in the dataset's classes (matters only for the
    ImageNet16-120 npz). Bad names, missing or corrupt files, or too large a batch raise ZcpError.
    """
    check_dataset(dataset)
    if source not in SOURCES:
        raise ZcpError(f"unknown image source {source!r}; known: {', '.join(SOURCES)}")
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("seed", seed, minimum=0)
    paths = paths or resolve_paths()
    if source == "gaussian":
        return _gaussian_batch(dataset, batch_size, seed)
    if source == "auto":
        source = _auto_source(dataset, paths)
    pool = _pickle_pool(dataset, paths) if source == "pickle" else _npz_pool(dataset, paths)

    rows = pool.rows[pool.labels[pool.rows] >= 0] if labelled_only else pool.rows
    if batch_size > len(rows):
        kind = f"images with a label in the {NUM_CLASSES[dataset]} classes of {dataset}" if labelled_only else "images"
        raise ZcpError(f"batch_size {batch_size} is larger than the {len(rows)} {kind} available in {pool.origin}")
    chosen = rows[np.random.default_rng(seed).choice(len(rows), size=batch_size, replace=False)]
    return ImageBatch(
        images=_normalise(pool.images[chosen], dataset),
        labels=torch.from_numpy(pool.labels[chosen]),
        dataset=dataset,
        source=source,
        indices=torch.from_numpy(chosen.astype(np.int64)),
        origin=pool.origin,
    )


def available_sources(paths: DataPaths | None = None) -> dict[str, dict[str, str | None]]:
    """For each dataset: the official pickle and the npz found (path, or None), and what "auto" would use."""
    paths = paths or resolve_paths()
    report: dict[str, dict[str, str | None]] = {}
    for dataset in DATASETS:
        pickle_path, npz_path = _find_pickle(dataset, paths), _npz_path(paths, dataset)
        npz_found = npz_path.is_file()
        report[dataset] = {
            "pickle": str(pickle_path) if pickle_path else None,
            "npz": str(npz_path) if npz_found else None,
            "auto": "pickle" if pickle_path else "npz" if npz_found else None,
        }
    return report


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ZcpError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _hint(key: str) -> str:
    return f"set --{key.replace('_', '-')}, ZCP_{key.upper()} or {key} in [paths] of the zcp config file"


def _find_pickle(dataset: str, paths: DataPaths) -> Path | None:
    if dataset in _CIFAR_PICKLE:
        path = paths.cifar_dir / _CIFAR_PICKLE[dataset][0]
        return path if path.is_file() else None
    return next((p for p in (paths.imagenet16_dir / n for n in _IMAGENET16_PICKLES) if p.is_file()), None)


def _npz_path(paths: DataPaths, dataset: str) -> Path:
    return paths.data_dir / "images" / _NPZ[dataset][0]


def _auto_source(dataset: str, paths: DataPaths) -> str:
    if _find_pickle(dataset, paths):
        return "pickle"
    if _npz_path(paths, dataset).is_file():
        return "npz"
    raise ZcpError(
        f"no images for {dataset}: {_missing_pickle_message(dataset, paths)}; "
        f"nor is there {_npz_path(paths, dataset)} ({_hint('data_dir')}); or use source 'gaussian'"
    )


def _missing_pickle_message(dataset: str, paths: DataPaths) -> str:
    if dataset in _CIFAR_PICKLE:
        return f"official pickle {paths.cifar_dir / _CIFAR_PICKLE[dataset][0]} not found ({_hint('cifar_dir')})"
    return (
        f"no official ImageNet16 pickle (val_data or train_data_batch_1..10) in {paths.imagenet16_dir} "
        f"({_hint('imagenet16_dir')})"
    )


def _pickle_pool(dataset: str, paths: DataPaths) -> _Pool:
    path = _find_pickle(dataset, paths)
    if path is None:
        raise ZcpError(_missing_pickle_message(dataset, paths))
    entry = _restricted_load(path)
    if not isinstance(entry, dict):
        raise ZcpError(f"{path} is not an image batch: expected a dict, found {type(entry).__name__}")
    # Python 2 str keys arrive as str (latin1) or, when written from Python 3, as bytes.
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    label_key = _CIFAR_PICKLE[dataset][1] if dataset in _CIFAR_PICKLE else "labels"
    missing = [k for k in ("data", label_key) if k not in entry]
    if missing:
        raise ZcpError(f"{path} is not an image batch: no {', '.join(map(repr, missing))} entry")
    size = IMAGE_SIZE[dataset]
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * size * size:
        raise ZcpError(f"{path}: 'data' must be a uint8 array (N, {3 * size * size}), found {_describe(data)}")
    images = data.reshape(-1, 3, size, size)  # rows are channel-planar (all R, then G, then B)
    labels = _labels(entry[label_key], len(images), dataset, path)
    # NATS-Bench's ImageNet16-120 is only the images of the first 120 classes.
    return _Pool(images, labels, np.flatnonzero(labels >= 0), path)


def _npz_pool(dataset: str, paths: DataPaths) -> _Pool:
    path = _npz_path(paths, dataset)
    if not path.is_file():
        raise ZcpError(f"image file {path} not found ({_hint('data_dir')})")
    label_key = _NPZ[dataset][1]
    try:
        with path.open("rb") as f:  # our handle: np.load(path) leaks its own when the zip is corrupt
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ZcpError(f"cannot read {path}: a single .npy array, not an npz archive")
            missing = [k for k in ("images", label_key) if k not in npz.files]
            if missing:
                raise ZcpError(f"{path} has no {', '.join(map(repr, missing))} array (found: {', '.join(npz.files)})")
            images, raw_labels = npz["images"], npz[label_key]
    except ZcpError:
        raise
    except OSError as exc:
        raise ZcpError(f"cannot read {path}: {_one_line(exc)}") from None
    except Exception as exc:  # an untrusted file that numpy cannot parse is corrupt, whatever the error
        raise ZcpError(f"cannot read {path}: corrupt or truncated npz ({type(exc).__name__}: {_one_line(exc)})") from None
    size = IMAGE_SIZE[dataset]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ZcpError(f"{path}: 'images' must be a uint8 array (N, {size}, {size}, 3), found {_describe(images)}")
    labels = _labels(raw_labels, len(images), dataset, path)
    return _Pool(images.transpose(0, 3, 1, 2), labels, np.arange(len(images)), path)


def _labels(raw: object, n: int, dataset: str, path: Path) -> np.ndarray:
    """0-based int64 labels; ImageNet16 files hold 1-based labels of 1000 classes, those > 120 become -1."""
    try:
        labels = np.asarray(raw)
    except ValueError:  # ragged nested lists
        raise ZcpError(f"{path}: labels are not a flat list of integers") from None
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ZcpError(f"{path}: expected {n} integer labels (one per image), found {_describe(labels)}")
    labels = labels.astype(np.int64)
    low, high = (1, _IMAGENET16_FILE_CLASSES) if dataset == "ImageNet16-120" else (0, NUM_CLASSES[dataset] - 1)
    if n and (labels.min() < low or labels.max() > high):
        raise ZcpError(f"{path}: labels must lie in {low}..{high}, found {labels.min()}..{labels.max()}")
    if dataset == "ImageNet16-120":
        return np.where(labels <= NUM_CLASSES[dataset], labels - 1, -1)
    return labels


def _normalise(images: np.ndarray, dataset: str) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float32, as torchvision's ToTensor() then Normalize(mean, std) compute it."""
    mean, std = NORMALISATION[dataset]
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    x.sub_(torch.tensor([m / 255 for m in mean]).view(1, 3, 1, 1))
    return x.div_(torch.tensor([s / 255 for s in std]).view(1, 3, 1, 1))


def _gaussian_batch(dataset: str, batch_size: int, seed: int) -> ImageBatch:
    rng = np.random.default_rng(seed)
    size = IMAGE_SIZE[dataset]
    images = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES[dataset], size=batch_size, dtype=np.int64)
    return ImageBatch(torch.from_numpy(images), torch.from_numpy(labels), dataset, "gaussian", None, None)


class _Refused(pickle.UnpicklingError):
    pass


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Python 3 pickles of protocol < 3 store bytes as ``_codecs.encode(text, 'latin1')``; admit only that."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


# Every global a pickle of dicts / lists / bytes / numpy arrays needs: numpy < 2 writes numpy.core,
# numpy >= 2 writes numpy._core; protocol 5 arrays go through _frombuffer.
_ALLOWED_GLOBALS = {
    **{(f"{core}.multiarray", "_reconstruct"): _multiarray._reconstruct for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.multiarray", "scalar"): _multiarray.scalar for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.numeric", "_frombuffer"): _numeric._frombuffer for core in ("numpy.core", "numpy._core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO) -> None:
        # latin1 turns Python 2 str (keys, array buffers) into str that numpy accepts, as numpy documents.
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _restricted_load(path: Path) -> object:
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f).load()
    except _Refused as exc:
        raise ZcpError(
            f"refusing to load {path}: the pickle references {exc}, which an image batch never needs "
            "(only dicts, lists, bytes and numpy arrays are allowed)"
        ) from None
    except OSError as exc:
        raise ZcpError(f"cannot read {path}: {_one_line(exc)}") from None
    except Exception as exc:  # an untrusted file that fails to unpickle is corrupt, whatever the error
        raise ZcpError(f"cannot read {path}: corrupt or truncated pickle ({type(exc).__name__}: {_one_line(exc)})") from None


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
