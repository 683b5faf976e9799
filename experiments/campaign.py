"""An evolution campaign: samples -> caches -> GP on the search split -> held-out report.

Run directory:
    config.toml         the complete config (defaults filled in)
    samples/            the search and held-out samples, DATASET-SPLIT-SPACE-KIND.json (re-usable sample files)
    caches/             their terminal caches, DATASET-SPLIT-SPACE-KIND-HASH (unless [cache] dir points elsewhere)
    log.jsonl           one line per generation: best / median fitness, size, diversity, seconds; with
                        several search targets also the best expression's fitness per target and the
                        target that limits it (``targets``, ``limiting``)
    checkpoint.json     plain JSON with a checksum (experiments/checkpoint.py), written atomically after every generation
    hall_of_fame.json   best distinct expressions with search fitness, and at the end their fitness per
                        search target and their held-out scores per space and dataset
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.atomic import atomic_write_text, remove_stale_temps
from evaluation.cache import Cache, build_cache, cache_parts, load_cache, merge_caches, sample_sha, unbuilt
from evaluation.energy import ENERGY_FILE, EnergyMeter, NoMeter, energy_meter
from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator, Payload
from evaluation.fitness import Fitness, Target, cache_accuracy, limiting, rank_correlation
from evaluation.groundtruth import load_ground_truth
from evaluation.paths import DataPaths
from evaluation.samples import Sample, make_sample, write_sample
from evaluation.spaces import get_space
from experiments.checkpoint import read_checkpoint, write_checkpoint
from experiments.config import MIN_SUBSET_N, Config, config_terminals, load_config, part_name
from gp.engine import Evolution
from gp.islands import Islands
from primitives.expression import parse, terminals_of
from primitives.functions import REGISTRY
from primitives.terminals import passes_needed, terminal_types

CONFIG, LOG, CHECKPOINT, HOF = "config.toml", "log.jsonl", "checkpoint.json", "hall_of_fame.json"
BASELINES = {"#params": "params", "FLOPs": "flops", "NASWOT": "layer_sum(m_logdet(code_kernel))",
             "MeCo (layers)": "layer_sum(v_min(chan_corr_eig))"}


def primitive_set_digest(terminals: tuple[str, ...]) -> str:
    """Hash of every primitive's name and signature plus the terminal list (what a tree can mean)."""
    sig = [(p.name, [a.__name__ for a in p.args], p.ret.__name__) for p in REGISTRY.primitives.values()]
    sig += [(e.name, e.type.__name__) for e in REGISTRY.ephemerals.values()]
    return hashlib.sha256(json.dumps([sig, list(terminals)]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Part:
    """One sample of a campaign with its cache and the accuracies of its networks (cache order)."""

    name: str
    sample: Sample
    cache: Cache
    accuracy: np.ndarray

    def target(self) -> Target:
        return Target(self.name, self.cache.env(), self.accuracy)


@dataclass
class Prepared:
    """A campaign's search and held-out parts; ``truth`` maps (space, dataset) to accuracy by official index."""

    search: list[Part]
    heldout: list[Part]
    truth: dict[tuple[str, str], np.ndarray]
    terminals: tuple[str, ...]


def campaign_terminals(config: Config) -> tuple[str, ...]:
    """The terminals a campaign caches and evolves over (``@base`` when the config lists none)."""
    return config_terminals(config.cache.terminals)


def cache_for(config: Config, sample: Sample, dataset: str, run_dir: Path, paths: DataPaths | None = None,
              progress: bool | None = None, say: Callable[[str], None] | None = None) -> Cache:
    """Build (or resume) and load the cache of ``sample`` made with the campaign's cache settings.

    One folder per part of the terminals (:func:`evaluation.cache.cache_parts`), named by what made it,
    so campaigns sharing ``[cache] dir`` share identical caches, and one that adds terminals to another's
    builds only the new passes."""
    c, k, par = config.campaign, config.cache, config.parallel
    caches = []
    for terminals in cache_parts(campaign_terminals(config)):
        key = json.dumps([sample_sha(sample), k.batch_size, c.seed, k.signal, k.images, terminals])
        where = (Path(k.dir) if k.dir else run_dir / "caches") / \
            f"{dataset}-{sample.split}-{sample.space}-{sample.kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        if say:
            todo = unbuilt(where, sample)
            say(f"{dataset} {sample.split} cache: {todo} networks to build, {len(sample.indices) - todo} cached, "
                f"{len(terminals)} terminals ({where})")
        build_cache(sample, dataset, where, batch_size=k.batch_size, seed=c.seed, signal=k.signal,
                    image_source=k.images, terminals=terminals, backend=par.backend, workers=par.workers,
                    address=par.address or None, paths=paths, progress=progress,
                    gpus_per_task=par.gpus_per_task or None, node_ip=par.node_ip_address or None)
        caches.append(load_cache(where, space=sample.space, dataset=dataset))
    return merge_caches(caches)


def campaign_truth(config: Config, paths: DataPaths | None = None) -> dict[tuple[str, str], np.ndarray]:
    """(space, dataset) -> accuracy by official index, for every space and dataset of the campaign;
    a dataset that a space's ground truth lacks is a ZcpError (in a cross-space campaign: the spaces
    disagree on datasets)."""
    c = config.campaign
    truth = {}
    for space in c.spaces:
        gt = load_ground_truth(space, paths)
        for dataset in c.datasets:
            acc = gt.accuracy[dataset]
            if np.isnan(acc).all():
                others = [o for o in c.spaces if o != space]
                why = f": the spaces {', '.join(c.spaces)} disagree on datasets" if others else ""
                raise ZcpError(f"the {space} ground truth ({gt.source}) has no {dataset} accuracy{why}")
            truth[space, dataset] = acc
    return truth


def subset_rows(n: int, subsets: int, seed: int) -> list[np.ndarray | None]:
    """Rows of ``subsets`` disjoint random subsets of a sample of ``n`` (as equal as can be, each
    sorted; ``[None]`` = the whole sample when ``subsets`` is 1)."""
    if subsets == 1:
        return [None]
    return [np.sort(rows) for rows in np.array_split(np.random.default_rng(seed).permutation(n), subsets)]


def prepare(config: Config, run_dir: Path, paths: DataPaths | None = None, progress: bool | None = None,
            splits: tuple[str, ...] = ("search", "heldout"), say: Callable[[str], None] | None = None) -> Prepared:
    """Draw (or re-draw identically) the samples of ``splits`` and build (or resume) their caches
    (a split left out keeps an empty list: reports on held-out networks need not load the search cache).

    Search parts: one per space x dataset x search kind; held-out parts: one per space x dataset.
    Every sample is drawn, and checked, before the first cache is built."""
    c, s = config.campaign, config.sample
    truth = campaign_truth(config, paths)
    drawn: dict[str, list[tuple[str, Sample]]] = {"search": [], "heldout": []}
    for space in c.spaces:
        for dataset in c.datasets:
            for split, kind, n in s.draws():
                if split not in splits:
                    continue
                sample = make_sample(get_space(space), kind, n, c.seed, split, dataset, truth[space, dataset],
                                     s.split_seed, s.heldout_fraction, s.bins)
                name = part_name(config, space, dataset, kind if split == "search" else None)
                if split == "search" and s.subsets > 1 and len(sample.indices) < s.subsets * MIN_SUBSET_N:
                    raise ZcpError(f"the {kind} search sample of {name} holds {len(sample.indices)} networks (short "
                                   f"bins): too few for {s.subsets} subsets of at least {MIN_SUBSET_N}")
                write_sample(sample, run_dir / "samples" / f"{dataset}-{split}-{space}-{kind}.json")
                if say:
                    say(f"{name} {split} sample: {len(sample.indices)} networks ({kind}, seed {c.seed})")
                drawn[split].append((name, sample))
    parts: dict[str, list[Part]] = {"search": [], "heldout": []}
    for split, pairs in drawn.items():
        for name, sample in pairs:
            begun = time.perf_counter()
            cache = cache_for(config, sample, sample.dataset, run_dir, paths, progress, say)
            if say:
                say(f"{name} {split} cache ready in {time.perf_counter() - begun:.0f} s")
            parts[split].append(Part(name, sample, cache, cache_accuracy(cache, truth[sample.space, sample.dataset])))
    return Prepared(parts["search"], parts["heldout"], truth, campaign_terminals(config))


def search_payload(config: Config, prepared: Prepared) -> Payload:
    """The search targets: each search part whole, or each of its ``subsets`` disjoint subsets (each
    with its part's goal, when the campaign sets goals)."""
    c, k = config.campaign, config.sample.subsets
    names, sources, rows, accuracies, goals = [], [], [], [], []
    for i, part in enumerate(prepared.search):
        for j, subset in enumerate(subset_rows(len(part.accuracy), k, c.seed)):
            names.append(part.name if subset is None else f"{part.name}/subset{j + 1}of{k}")
            sources.append(i)
            rows.append(subset)
            accuracies.append(part.accuracy if subset is None else part.accuracy[subset])
            goals += [c.goals[part.name]] if c.goals else []
    return Payload(tuple(names), tuple(part.cache.arrays for part in prepared.search), tuple(accuracies),
                   prepared.terminals, c.metric, c.combine, c.cost_weight, c.time_limit, tuple(sources), tuple(rows),
                   config.parallel.memo_mib, tuple(goals))


def heldout_report(texts: list[str], prepared: Prepared) -> dict[str, dict[str, dict[str, float]]]:
    """Kendall and Spearman of each expression on each held-out part (one per space and dataset)."""
    targets = [part.target() for part in prepared.heldout]
    fitness = Fitness(targets, prepared.terminals)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for text in texts:
        try:
            scores = fitness.scores(text)
        except ZcpError:
            scores = [np.full(len(t.accuracy), np.nan) for t in targets]
        report[text] = {t.name: {m: rank_correlation(sc, t.accuracy, m) for m in ("kendall", "spearman")}
                        for sc, t in zip(scores, targets)}
    return report


def _explain(line: dict[str, Any], engine: Evolution | Islands, evaluator: Evaluator, payload: Payload) -> dict[str, Any]:
    """With several search targets, add to a log line the best expression's fitness on each target
    (``targets``) and the one that limits it (``limiting``: the argmin, of the margins with goals)."""
    if len(payload.names) > 1:
        values = evaluator.per_target([engine.hall_of_fame.entries()[0]["expression"]])[0]
        line["targets"] = dict(zip(payload.names, values))
        line["limiting"] = payload.names[limiting(values, payload.goals)]
    return line


def _with_targets(entries: list[dict[str, Any]], evaluator: Evaluator, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Hall-of-fame entries with their search fitness on each target (``search_targets``)."""
    values = evaluator.per_target([e["expression"] for e in entries])
    return [{**e, "search_targets": dict(zip(names, v))} for e, v in zip(entries, values)]


def _write_log(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / LOG, "".join(json.dumps(line) + "\n" for line in lines))


def run(config: Config, run_dir: Path, paths: DataPaths | None = None, resume: bool = False,
        progress: bool | None = None, energy: bool | None = None) -> dict[str, Any]:
    """Run (or resume) a campaign in ``run_dir``; returns the final hall-of-fame record.

    ``energy`` (None: the config's ``[campaign] energy``) measures each phase's energy."""
    show = sys.stderr.isatty() if progress is None else progress
    say = _say if progress is None and not show else None  # not a terminal: one line per phase, no bars
    meter = energy_meter(run_dir / ENERGY_FILE, config.campaign.energy if energy is None else energy,
                         config.campaign.energy_region)
    start = time.perf_counter()
    remove_stale_temps(run_dir)
    with meter.phase("cache build"):
        prepared = prepare(config, run_dir, paths, progress, say=say)
    prepare_seconds = time.perf_counter() - start
    types = terminal_types(prepared.terminals)
    pset_digest = primitive_set_digest(prepared.terminals)
    payload = search_payload(config, prepared)
    with meter.phase("evolution"):
        engine, hof = _evolve(run_dir, config, payload, types, pset_digest, resume, show, say, start)
    if say:
        say(f"held-out report: the hall of fame and the baselines on "
            f"{sum(len(p.sample.indices) for p in prepared.heldout)} held-out networks")
    return _final_report(run_dir, engine, hof, prepared, prepare_seconds, time.perf_counter() - start, meter)


def _evolve(run_dir: Path, config: Config, payload: Payload, types: dict[str, type], pset_digest: str, resume: bool,
            show: bool, say: Callable[[str], None] | None, start: float) -> tuple[Evolution | Islands, list[dict[str, Any]]]:
    """Generations up to ``[gp] generations`` from a fresh start or the checkpoint, checkpointing each;
    returns the engine and its hall of fame with each entry's fitness per search target."""
    log: list[dict[str, Any]] = []
    close = _no_op
    try:
        if resume:
            state = read_checkpoint(run_dir / CHECKPOINT)
            try:
                engine, scorer, close = _engine(config, payload, types, state.get("engine"))
            except ZcpError as exc:
                raise ZcpError(f"checkpoint {run_dir / CHECKPOINT} is refused: {exc}") from None
            log = [line for line in _read_log(run_dir) if line["generation"] <= engine.generation]
        else:
            engine, scorer, close = _engine(config, payload, types)
            log.append(_explain(engine.initialise(), engine, scorer, payload))
            _checkpoint(run_dir, engine, config, pset_digest, log)
        bar = tqdm(total=config.gp.generations, initial=engine.generation, disable=not show, desc="evolve", unit="gen")
        while engine.generation < config.gp.generations:
            log.append(_explain(engine.step(), engine, scorer, payload))
            _checkpoint(run_dir, engine, config, pset_digest, log)
            bar.update(1)
            bar.set_postfix(best=f"{log[-1]['best']:.3f}")
            every = max(1, config.gp.generations // 10)
            if say and (engine.generation % every == 0 or engine.generation == config.gp.generations):
                say(f"generation {engine.generation}/{config.gp.generations}: best search fitness "
                    f"{log[-1]['best']:.3f}, {time.perf_counter() - start:.0f} s so far")
        bar.close()
        hof = _with_targets(engine.hall_of_fame.entries(), scorer, payload.names)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(run_dir)) from None
    finally:
        close()
    return engine, hof


def _no_op() -> None:
    pass


def _engine(config: Config, payload: Payload, types: dict[str, type],
            state: Any = None) -> tuple[Evolution | Islands, Evaluator, Callable[[], None]]:
    """The run's engine (new, or from a checkpoint's engine ``state``), the evaluator that reports per-target
    fitness, and what closes them: one population scored by an :class:`Evaluator`, or islands
    (``[gp] islands`` > 1) whose hosts hold the payload (per-target reports then run serially here)."""
    par = config.parallel
    if config.gp.islands > 1:
        args = (REGISTRY, types, config.gp, payload.evolution_setup, par.backend, par.workers, par.address or None,
                par.node_ip_address or None)
        islands = Islands(*args) if state is None else Islands.from_state(state, *args)
        return islands, Evaluator(payload), islands.close
    evaluator = Evaluator(payload, par.backend, par.workers, par.address or None, par.gpus_per_task,
                          par.node_ip_address or None)
    try:
        if state is None:
            return Evolution(REGISTRY, types, config.gp, evaluator), evaluator, evaluator.close
        return Evolution.from_state(state, REGISTRY, types, config.gp, evaluator), evaluator, evaluator.close
    except BaseException:
        evaluator.close()
        raise


def _say(line: str) -> None:
    """One progress line on stderr (used when it is not a terminal, so logs show each phase)."""
    print(f"zcp: {line}", file=sys.stderr, flush=True)


def _interrupted(run_dir: Path) -> str:
    """What a Ctrl-C leaves behind, and how to go on."""
    try:
        generation = read_checkpoint(run_dir / CHECKPOINT)["engine"]["generation"]
    except (ZcpError, KeyError, TypeError):
        return "no generation was finished; the caches are kept: run the same `zcp evolve` again"
    return f"{run_dir} keeps the checkpoint of generation {generation}: continue with `zcp resume {run_dir}`"


def _checkpoint(run_dir: Path, engine: Evolution | Islands, config: Config, pset_digest: str, log: list[dict[str, Any]]) -> None:
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


def _final_report(run_dir: Path, engine: Evolution | Islands, entries: list[dict[str, Any]], prepared: Prepared,
                  prepare_seconds: float, seconds: float, meter: EnergyMeter | NoMeter) -> dict[str, Any]:
    """The finished hall of fame: ``entries`` (with their per-target search fitness) and the baselines,
    scored on every held-out part."""
    available = {n: t for n, t in BASELINES.items()
                 if terminals_of(parse(t, REGISTRY, terminal_types())) <= set(prepared.terminals)}
    with meter.phase("report"):
        report = heldout_report([e["expression"] for e in entries] + list(available.values()), prepared)
    for e in entries:
        e["heldout"] = report[e["expression"]]
        e["passes"] = passes_needed(terminals_of(parse(e["expression"], REGISTRY, terminal_types())))
    record = {"status": "finished", "generation": engine.generation, "seconds_this_run": round(seconds, 1),
              "cache_seconds_this_run": round(prepare_seconds, 1), "evaluations": len(engine.memo),
              "search_n": [len(p.accuracy) for p in prepared.search], "heldout_n": [len(p.accuracy) for p in prepared.heldout],
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

