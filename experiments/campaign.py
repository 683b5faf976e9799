"""An evolution campaign: samples -> caches -> GP on the search split -> held-out report.

Run directory:
    config.toml         the complete config (defaults filled in)
    samples/            the search and held-out samples per dataset (re-usable sample files)
    caches/             their terminal caches (unless [cache] dir points elsewhere)
    log.jsonl           one line per generation: best / median fitness, size, diversity, seconds
    checkpoint.json     plain JSON with a checksum (experiments/checkpoint.py), written atomically after every generation
    hall_of_fame.json   best distinct expressions with search fitness, and held-out scores at the end
    energy.json         energy of this run's phases (cache build, evolution, report; evaluation/energy.py),
                        also in hall_of_fame.json as ``energy_this_run``; absent with [campaign] energy = false

``resume`` refuses a run whose config or primitive set changed since its checkpoint. Ctrl-C stops
after the last completed generation's checkpoint; nothing of a half-done generation is kept.
A run killed before its first checkpoint resumes by starting over from its saved config.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.atomic import atomic_write_text, remove_stale_temps
from evaluation.cache import Cache, build_cache, load_cache, sample_sha
from evaluation.energy import ENERGY_FILE, EnergyMeter, NoMeter, energy_meter
from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator, Payload
from evaluation.fitness import Fitness, make_target, rank_correlation
from evaluation.groundtruth import load_ground_truth
from evaluation.paths import DataPaths
from evaluation.samples import Sample, make_sample, write_sample
from evaluation.spaces import get_space
from experiments.checkpoint import read_checkpoint, write_checkpoint
from experiments.config import Config, load_config
from gp.engine import Evolution
from primitives.expression import parse, terminals_of
from primitives.functions import REGISTRY
from primitives.terminals import TERMINALS, passes_needed, terminal_types

CONFIG, LOG, CHECKPOINT, HOF = "config.toml", "log.jsonl", "checkpoint.json", "hall_of_fame.json"
BASELINES = {"#params": "params", "FLOPs": "flops", "NASWOT": "layer_sum(m_logdet(code_kernel))",
             "MeCo (layers)": "layer_sum(v_min(chan_corr_eig))"}


def primitive_set_digest(terminals: tuple[str, ...]) -> str:
    """Hash of every primitive's name and signature plus the terminal list (what a tree can mean)."""
    sig = [(p.name, [a.__name__ for a in p.args], p.ret.__name__) for p in REGISTRY.primitives.values()]
    sig += [(e.name, e.type.__name__) for e in REGISTRY.ephemerals.values()]
    return hashlib.sha256(json.dumps([sig, list(terminals)]).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    search: list[Cache]
    heldout: list[Cache]
    truth: dict[str, np.ndarray]
    terminals: tuple[str, ...]


def campaign_terminals(config: Config) -> tuple[str, ...]:
    """The terminals a campaign caches and evolves over (all of them when the config lists none)."""
    return tuple(sorted(config.cache.terminals or TERMINALS))


def cache_for(config: Config, sample: Sample, dataset: str, run_dir: Path, paths: DataPaths | None = None,
              progress: bool | None = None) -> Cache:
    """Build (or resume) and load the cache of ``sample`` made with the campaign's cache settings.

    Its folder is named by what made it, so campaigns sharing ``[cache] dir`` share identical caches."""
    c, k, par = config.campaign, config.cache, config.parallel
    terminals = campaign_terminals(config)
    key = json.dumps([sample_sha(sample), k.batch_size, c.seed, k.signal, k.images, terminals])
    where = (Path(k.dir) if k.dir else run_dir / "caches") / \
        f"{dataset}-{sample.split}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    build_cache(sample, dataset, where, batch_size=k.batch_size, seed=c.seed, signal=k.signal,
                image_source=k.images, terminals=terminals, backend=par.backend, workers=par.workers,
                address=par.address or None, paths=paths, progress=progress)
    return load_cache(where, space=c.space, dataset=dataset)


def prepare(config: Config, run_dir: Path, paths: DataPaths | None = None, progress: bool | None = None,
            splits: tuple[str, ...] = ("search", "heldout")) -> Prepared:
    """Draw (or re-draw identically) the samples of ``splits`` and build (or resume) their caches
    (a split left out keeps an empty list: reports on held-out networks need not load the search cache)."""
    c, s = config.campaign, config.sample
    space = get_space(c.space)
    gt = load_ground_truth(c.space, paths)
    search, heldout = [], []
    for dataset in c.datasets:
        acc = gt.accuracy[dataset]
        for split, kind, n, out in (("search", s.search_kind, s.search_n, search),
                                    ("heldout", s.heldout_kind, s.heldout_n, heldout)):
            if split not in splits:
                continue
            sample = make_sample(space, kind, n, c.seed, split, dataset, acc, s.split_seed, s.heldout_fraction, s.bins)
            write_sample(sample, run_dir / "samples" / f"{dataset}-{split}.json")
            out.append(cache_for(config, sample, dataset, run_dir, paths, progress))
    return Prepared(search, heldout, {d: gt.accuracy[d] for d in c.datasets}, campaign_terminals(config))


def _payload(config: Config, caches: list[Cache], truth: dict[str, np.ndarray], terminals: tuple[str, ...]) -> Payload:
    return Payload(tuple(config.campaign.datasets), tuple(c.arrays for c in caches),
                   tuple(np.asarray(truth[c.manifest["dataset"]])[c.indices] for c in caches),
                   terminals, config.campaign.metric, config.campaign.combine, config.campaign.cost_weight,
                   config.campaign.time_limit)


def heldout_report(texts: list[str], config: Config, prepared: Prepared) -> dict[str, dict[str, dict[str, float]]]:
    """Kendall and Spearman of each expression on each dataset's held-out cache."""
    targets = [make_target(c, prepared.truth[c.manifest["dataset"]]) for c in prepared.heldout]
    fitness = Fitness(targets, prepared.terminals)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for text in texts:
        try:
            scores = fitness.scores(text)
        except ZcpError:
            scores = [np.full(len(t.accuracy), np.nan) for t in targets]
        report[text] = {t.dataset: {m: rank_correlation(sc, t.accuracy, m) for m in ("kendall", "spearman")}
                        for sc, t in zip(scores, targets)}
    return report


def _write_log(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / LOG, "".join(json.dumps(line) + "\n" for line in lines))


def run(config: Config, run_dir: Path, paths: DataPaths | None = None, resume: bool = False,
        progress: bool | None = None, energy: bool | None = None) -> dict[str, Any]:
    """Run (or resume) a campaign in ``run_dir``; returns the final hall-of-fame record.

    ``energy`` (None: the config's ``[campaign] energy``) measures each phase's energy."""
    show = sys.stderr.isatty() if progress is None else progress
    meter = energy_meter(run_dir / ENERGY_FILE, config.campaign.energy if energy is None else energy,
                         config.campaign.energy_region)
    start = time.perf_counter()
    remove_stale_temps(run_dir)
    with meter.phase("cache build"):
        prepared = prepare(config, run_dir, paths, show)
    prepare_seconds = time.perf_counter() - start
    types = terminal_types(prepared.terminals)
    pset_digest = primitive_set_digest(prepared.terminals)
    with meter.phase("evolution"):
        evaluator = Evaluator(_payload(config, prepared.search, prepared.truth, prepared.terminals),
                              config.parallel.backend, config.parallel.workers, config.parallel.address or None)
        engine = _evolve(run_dir, config, evaluator, types, pset_digest, resume, show)
    return _final_report(run_dir, engine, config, prepared, prepare_seconds, time.perf_counter() - start, meter)


def _evolve(run_dir: Path, config: Config, evaluator: Evaluator, types: Any, pset_digest: str, resume: bool,
            show: bool) -> Evolution:
    """Generations up to ``[gp] generations`` from a fresh start or the checkpoint, checkpointing each."""
    log: list[dict[str, Any]] = []
    try:
        if resume:
            state = read_checkpoint(run_dir / CHECKPOINT)
            try:
                engine = Evolution.from_state(state.get("engine"), REGISTRY, types, config.gp, evaluator)
            except ZcpError as exc:
                raise ZcpError(f"checkpoint {run_dir / CHECKPOINT} is refused: {exc}") from None
            log = [line for line in _read_log(run_dir) if line["generation"] <= engine.generation]
        else:
            engine = Evolution(REGISTRY, types, config.gp, evaluator)
            log.append(engine.initialise())
            _checkpoint(run_dir, engine, config, pset_digest, log)
        bar = tqdm(total=config.gp.generations, initial=engine.generation, disable=not show, desc="evolve", unit="gen")
        while engine.generation < config.gp.generations:
            log.append(engine.step())
            _checkpoint(run_dir, engine, config, pset_digest, log)
            bar.update(1)
            bar.set_postfix(best=f"{log[-1]['best']:.3f}")
        bar.close()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(run_dir)) from None
    finally:
        evaluator.close()
    return engine


def _interrupted(run_dir: Path) -> str:
    """What a Ctrl-C leaves behind, and how to go on."""
    try:
        generation = read_checkpoint(run_dir / CHECKPOINT)["engine"]["generation"]
    except (ZcpError, KeyError, TypeError):
        return "no generation was finished; the caches are kept: run the same `zcp evolve` again"
    return f"{run_dir} keeps the checkpoint of generation {generation}: continue with `zcp resume {run_dir}`"


def _checkpoint(run_dir: Path, engine: Evolution, config: Config, pset_digest: str, log: list[dict[str, Any]]) -> None:
    _write_log(run_dir, log)
    hof = [dict(entry) for entry in engine.hall_of_fame.entries()]
    atomic_write_text(run_dir / HOF, json.dumps({"status": "running", "generation": engine.generation,
                                                 "entries": hof}, indent=1) + "\n")
    write_checkpoint(run_dir / CHECKPOINT, {"config_digest": config.digest(), "primitive_set": pset_digest,
                                            "engine": engine.state()})


def read_hall_of_fame(run_dir: Path) -> dict[str, Any]:
    """The record in ``run_dir``'s hall_of_fame.json; ZcpError (one line) if it is missing or unreadable."""
    try:
        record = json.loads((run_dir / HOF).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZcpError(f"{run_dir} has no readable {HOF} ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict):
        raise ZcpError(f"{run_dir / HOF} is not a zcp hall of fame")
    return record


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _final_report(run_dir: Path, engine: Evolution, config: Config, prepared: Prepared, prepare_seconds: float,
                  seconds: float, meter: EnergyMeter | NoMeter) -> dict[str, Any]:
    entries = [dict(entry) for entry in engine.hall_of_fame.entries()]
    available = {n: t for n, t in BASELINES.items()
                 if terminals_of(parse(t, REGISTRY, terminal_types())) <= set(prepared.terminals)}
    with meter.phase("report"):
        report = heldout_report([e["expression"] for e in entries] + list(available.values()), config, prepared)
    for e in entries:
        e["heldout"] = report[e["expression"]]
        e["passes"] = passes_needed(terminals_of(parse(e["expression"], REGISTRY, terminal_types())))
    record = {"status": "finished", "generation": engine.generation, "seconds_this_run": round(seconds, 1),
              "cache_seconds_this_run": round(prepare_seconds, 1), "evaluations": len(engine.memo),
              "search_n": [len(c.indices) for c in prepared.search], "heldout_n": [len(c.indices) for c in prepared.heldout],
              "entries": entries, "baselines": {n: {"expression": t, "heldout": report[t]} for n, t in available.items()}}
    if meter.rows:
        record["energy_this_run"] = meter.rows
    atomic_write_text(run_dir / HOF, json.dumps(record, indent=1) + "\n")
    return record


def start(config_path: str | Path, run_dir: str | Path, paths: DataPaths | None = None,
          progress: bool | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``zcp evolve``: a new campaign in an empty (or new) run directory (``overrides``: SECTION.KEY=VALUE)."""
    config, run_dir = load_config(config_path, overrides), Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        raise ZcpError(f"{run_dir} already holds a campaign: continue it with `zcp resume {run_dir}` or choose another --out")
    atomic_write_text(run_dir / CONFIG, config.to_toml())
    return run(config, run_dir, paths, progress=progress)


def resume(run_dir: str | Path, paths: DataPaths | None = None, progress: bool | None = None,
           energy: bool | None = None) -> dict[str, Any]:
    """``zcp resume``: continue a campaign from its checkpoint, refusing a changed config or primitive set
    (``energy=False`` turns energy tracking off for this run whatever the config says)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        if not (run_dir / CONFIG).exists():
            raise ZcpError(f"{run_dir} has no {CHECKPOINT}: nothing to resume (start one with `zcp evolve`)")
        # killed before generation 0 was saved: start over from the saved config (caches resume)
        return run(load_config(run_dir / CONFIG), run_dir, paths, progress=progress, energy=energy)
    state = read_checkpoint(run_dir / CHECKPOINT)
    config = load_config(run_dir / CONFIG)
    if state.get("config_digest") != config.digest():
        raise ZcpError(f"{run_dir / CONFIG} changed since the checkpoint was written: resume refuses a changed config")
    if state.get("primitive_set") != primitive_set_digest(campaign_terminals(config)):
        raise ZcpError("the primitive set changed since the checkpoint was written: resume refuses it")
    return run(config, run_dir, paths, resume=True, progress=progress, energy=energy)

