"""Write small NATS-Bench archives in the official fast-mode on-disk format, with known numbers.

The format, as ``nats_bench`` 1.8 reads it (api_utils.py, api_topology.py, api_size.py) and as
AutoDL-Projects' exps/NATS-Bench/{tss,sss}-collect.py writes it. Every file is a pickle (protocol 4)
compressed with bz2, named ``*.pickle.pbz2``:

- ``meta.pickle.pbz2``: ``{'meta_archs': [arch string of every index], 'total_archs': n,
  'arch2infos': None, 'evaluated_indexes': set()}``; only ``meta_archs`` is read;
- ``{index:06d}.pickle.pbz2`` per evaluated architecture: ``{hp: ArchResults state dict}`` with hp
  '12' and '200' (TSS) or '01', '12' and '90' (SSS), the number of training epochs;
- ArchResults state dict: ``arch_index``, ``arch_str``, ``clear_net_done``,
  ``dataset_seed`` ``{dataset: sorted int seeds}`` and ``all_results`` ``{(dataset, seed): ResultsCount
  state dict}``, datasets 'cifar10-valid', 'cifar10', 'cifar100', 'ImageNet16-120';
- ResultsCount state dict (its ``__dict__``): ``name`` (the dataset), ``net_state_dict`` (None in the
  simple archives), ``train_acc1es`` / ``train_acc5es`` / ``train_losses`` / ``train_times``
  ``{epoch: value}``, ``eval_names``, ``eval_acc1es`` / ``eval_losses`` / ``eval_times``
  ``{'<set>@<epoch>': value}``, ``params`` (millions), ``flop``, ``latency`` (list of seconds),
  ``arch_config``, ``seed``, ``epochs``. Eval sets: 'ori-test' for cifar10 (its test set);
  'x-valid' and 'ori-test' for cifar10-valid; 'x-valid', 'x-test' and 'ori-test' for cifar100 and
  ImageNet16-120, whose test accuracy is 'x-test'.

The files are written with plain dicts (no ``nats_bench`` classes), so loading them with the real
``nats_bench.create(folder, space, fast_mode=True)`` checks this description.

Decoys make wrong reads visible: under the full schedule the seeds differ from their mean (which is
the known accuracy), earlier epochs differ from the last, other hp values, 'cifar10-valid', 'x-valid'
and 'ori-test' all hold other numbers, and parameter counts differ under the other hp values.
"""
from __future__ import annotations

import bz2
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.spaces import get_space

HPS = {"tss": ("12", "200"), "sss": ("01", "12", "90")}
FULL_HP = {"tss": "200", "sss": "90"}
SEEDS = (777, 888, 999)
SEED_OFFSETS = (-1.5, 0.25, 1.25)  # per-seed deviation from the known mean; sums to 0
EVAL_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
TEST_SET = {"cifar10": "ori-test", "cifar100": "x-test", "ImageNet16-120": "x-test"}
SET_DECOY = {"x-valid": 5.0, "x-test": 6.0, "ori-test": 7.0}  # how far a wrongly read set is off
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}

Known = Mapping[int, Mapping[str, tuple[float, float]]]
"""index -> dataset -> (seed-mean test accuracy under the full schedule, parameters in millions)."""


def _save(obj: object, path: Path) -> None:
    with bz2.BZ2File(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _last_epoch_value(known_acc: float, dataset: str, eval_set: str, full: bool) -> float:
    """The final-epoch accuracy the file holds; only the tested set under the full schedule is the known one."""
    if full and TEST_SET.get(dataset) == eval_set:
        return known_acc
    return known_acc - SET_DECOY[eval_set] - (0.0 if full else 10.0)


def _results_count(space: str, arch: str, dataset: str, seed: int, offset: float,
                   hp: str, known_acc: float, params_m: float) -> dict:
    epochs, full = int(hp), hp == FULL_HP[space]

    def curve(last: float) -> dict[int, float]:
        # earlier epochs are 20 points lower, so reading a non-final epoch is visible
        return {e: (last if e == epochs - 1 else last - 20.0) for e in range(epochs)}

    eval_acc, eval_loss, eval_time = {}, {}, {}
    for eval_set in EVAL_SETS[dataset]:
        for e, value in curve(_last_epoch_value(known_acc, dataset, eval_set, full) + offset).items():
            eval_acc[f"{eval_set}@{e}"] = value
            eval_loss[f"{eval_set}@{e}"] = 1.0
            eval_time[f"{eval_set}@{e}"] = 0.5
    if space == "tss":
        arch_config = {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": CLASSES[dataset]}
    else:
        arch_config = {"name": "infer.shape.tiny", "channels": arch, "arch_str": arch,
                       "genotype": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                       "class_num": CLASSES[dataset]}
    return {
        "name": dataset,
        "net_state_dict": None,
        "train_acc1es": curve(99.0 + offset / 10),
        "train_acc5es": curve(99.9),
        "train_losses": curve(0.01),
        "train_times": dict.fromkeys(range(epochs), 10.0),
        "arch_config": arch_config,
        "params": params_m if full else params_m + 1.0,
        "flop": 100.0 * params_m,
        "seed": str(seed),  # the collect scripts store it as the string from the checkpoint name
        "epochs": epochs,
        "latency": [0.01],
        "eval_names": list(EVAL_SETS[dataset]),
        "eval_acc1es": eval_acc,
        "eval_times": eval_time,
        "eval_losses": eval_loss,
    }


def _arch_results(space: str, index: int, arch: str, hp: str, known: Mapping[str, tuple[float, float]]) -> dict:
    datasets = dict(known)
    if "cifar10" in known:  # the decoy entry NATS-Bench keeps beside cifar10
        acc, params = known["cifar10"]
        datasets["cifar10-valid"] = (acc - 3.0, params)
    all_results = {
        (dataset, seed): _results_count(space, arch, dataset, seed, offset, hp, acc, params)
        for dataset, (acc, params) in datasets.items()
        for seed, offset in zip(SEEDS, SEED_OFFSETS)
    }
    return {
        "arch_index": index,
        "arch_str": arch,
        "all_results": all_results,
        "dataset_seed": {dataset: list(SEEDS) for dataset in datasets},
        "clear_net_done": True,
    }


def write_archive(folder: str | Path, space: str, known: Known, meta_archs: Sequence[str] | None = None) -> Path:
    """Write a fast-mode archive for ``space`` whose meta lists every architecture and which holds
    files only for the indices of ``known``; ``meta_archs`` replaces the meta list (to fake a wrong archive)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sp = get_space(space)
    archs = list(meta_archs) if meta_archs is not None else [sp.arch_str(i) for i in range(sp.size)]
    _save({"meta_archs": archs, "total_archs": len(archs), "arch2infos": None, "evaluated_indexes": set()},
          folder / "meta.pickle.pbz2")
    for index, per_dataset in known.items():
        data = {hp: _arch_results(space, index, archs[index], hp, per_dataset) for hp in HPS[space]}
        _save(data, folder / f"{index:06d}.pickle.pbz2")
    return folder
