"""Comparison of proxies against ground truth: rank correlations, top-10% precision, bootstrap CIs, plots.

Non-finite scores (a proxy's NaN or infinity) rank below every finite score, as the GP's fitness
treats them; Pearson's r, which needs values, uses the finite scores only. Confidence intervals are
percentile bootstrap intervals over networks (resampled with ``default_rng(seed)``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from evaluation.atomic import atomic_write_bytes, atomic_write_text
from evaluation.energy import markdown as energy_markdown
from evaluation.errors import ZcpError

METRICS = ("kendall", "spearman", "pearson", "top10")
# Published values (docs/proxies.md, sections 13c-13d for SSS and NB101): (metric, value, source).
def _zico(table: str, **taus: float) -> dict[str, tuple[str, float, str]]:
    return {proxy: ("kendall", tau, f"ZiCo {table}") for proxy, tau in taus.items()}


# (space, dataset) -> proxy -> (metric, value, source); a report shows only its own space's and dataset's.
PUBLISHED: dict[tuple[str, str], dict[str, tuple[str, float, str]]] = {
    ("tss", "cifar10"): {
        **_zico("T3", params=0.57, synflow=0.54, naswot=0.58, zico=0.61, snip=0.46, grad_norm=0.46),
        **_zico("T1", flops=0.54, grasp=0.37, fisher=0.40, zen=0.29),
        "jacov": ("spearman", 0.731, "Abdelfattah T1, |rho|"), "meco": ("spearman", 0.894, "MeCo T1"),
        "dextr": ("spearman", 0.90, "Dextr T1"), "wrcor": ("spearman", 0.812, "WRCor T2"),
        "az_nas": ("kendall", 0.741, "AZ-NAS T1"), "az_nas.expressivity": ("kendall", 0.569, "AZ-NAS T1"),
        "az_nas.progressivity": ("kendall", 0.521, "AZ-NAS T1"), "az_nas.trainability": ("kendall", 0.349, "AZ-NAS T1"),
        "az_nas.complexity": ("kendall", 0.578, "AZ-NAS T1")},
    ("tss", "cifar100"): _zico("T1", params=0.55, flops=0.51, synflow=0.57, naswot=0.62, zico=0.61, snip=0.46,
                               grad_norm=0.47, grasp=0.36, fisher=0.41, zen=0.28),
    ("tss", "ImageNet16-120"): _zico("T1", params=0.52, flops=0.49, synflow=0.56, naswot=0.60, zico=0.60, snip=0.43,
                                     grad_norm=0.43, grasp=0.40, fisher=0.37, zen=0.29),
    ("sss", "cifar10"): {**_zico("T3", params=0.53, flops=0.19, synflow=0.61, naswot=0.45, zico=0.54, snip=0.42,
                                 grad_norm=0.35, grasp=-0.09, fisher=0.30, zen=0.50),
                         "meco": ("spearman", -0.79, "MeCo T1, approx.")},
    ("sss", "cifar100"): {**_zico("T3", params=0.54, flops=0.21, synflow=0.60, naswot=0.43, zico=0.55, snip=0.46,
                                  grad_norm=0.34, grasp=0.01, fisher=0.41, zen=0.52),
                          "meco": ("spearman", -0.87, "MeCo T1, approx.")},
    ("sss", "ImageNet16-120"): {**_zico("T3", params=0.65, flops=0.38, synflow=0.39, naswot=0.42, zico=0.70,
                                        snip=0.57, grad_norm=0.49, grasp=0.29, fisher=0.33, zen=0.69),
                                "meco": ("spearman", -0.86, "MeCo T1, approx.")},
    ("nb101", "cifar10"): {**_zico("F3", params=0.31, flops=0.31, synflow=0.23, zico=0.46, snip=-0.12,
                                   grad_norm=-0.17, grasp=0.20, fisher=-0.20, zen=0.46),
                           "naswot": ("kendall", 0.285, "NASWOT F3"),
                           "jacov": ("spearman", -0.29, "NAS-Bench-Suite-Zero F2")},
}


def _worst_last(scores: np.ndarray) -> np.ndarray:
    """Scores with every non-finite value replaced by one below the smallest finite value."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    low = scores[finite].min() - 1.0 if finite.any() else 0.0
    return np.where(finite, scores, low)


def _kendall(ranked: np.ndarray, truth: np.ndarray) -> float:
    """Kendall tau-b of scores already passed through ``_worst_last`` (NaN when they are constant)."""
    return math.nan if np.ptp(ranked) == 0 else float(stats.kendalltau(ranked, truth)[0])


def _resamples(n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's draws of ``n`` networks with replacement: the same rows for every proxy of a
    comparison with the same seed, which is what makes a paired difference paired."""
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        yield rng.integers(0, n, n)


def top_precision(scores: np.ndarray, truth: np.ndarray, share: float = 0.1) -> float:
    """Share of the true top ``share`` of networks that the proxy also puts in its top ``share``."""
    k = max(1, math.ceil(share * len(truth)))
    best = set(np.argsort(-truth, kind="stable")[:k])
    picked = set(np.argsort(-scores, kind="stable")[:k])
    return len(best & picked) / k


def metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Kendall tau-b, Spearman rho, Pearson r (finite scores) and top-10% precision."""
    ranked = _worst_last(scores)
    finite = np.isfinite(scores)
    constant = np.ptp(ranked) == 0
    pearson = (float(stats.pearsonr(scores[finite], truth[finite])[0])
               if finite.sum() > 2 and np.ptp(scores[finite]) > 0 else math.nan)
    return {"kendall": _kendall(ranked, truth),
            "spearman": math.nan if constant else float(stats.spearmanr(ranked, truth)[0]),
            "pearson": pearson, "top10": top_precision(ranked, truth)}


def bootstrap(scores: np.ndarray, truth: np.ndarray, reps: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap interval of each metric, resampling networks with replacement."""
    draws = {m: [] for m in METRICS}
    for rows in _resamples(len(truth), reps, seed):
        for m, v in metrics(scores[rows], truth[rows]).items():
            draws[m].append(v)
    return {m: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) if not np.all(np.isnan(v))
            else (math.nan, math.nan) for m, v in draws.items()}


@dataclass(frozen=True)
class Paired:
    """A proxy's Kendall tau minus a reference proxy's on the same networks, with a paired bootstrap interval;
    ``not_above``: the share of resamples in which the proxy's tau is not above the reference's."""

    proxy: str
    reference: str
    difference: float
    interval: tuple[float, float]
    not_above: float


def paired(proxy: str, scores: np.ndarray, reference: str, ref_scores: np.ndarray, truth: np.ndarray,
           reps: int = 1000, seed: int = 0) -> Paired:
    """Kendall tau of ``scores`` minus that of ``ref_scores``, each resample drawing the same networks for
    both (the draws of ``bootstrap`` with the same seed). Two proxies that misrank the same networks have
    wide marginal intervals but a narrow interval of their difference: this one says whether one is above."""
    # ranking the whole sample once gives each resample the same ranks as ranking the resample itself
    ranked, ref_ranked = _worst_last(scores), _worst_last(ref_scores)
    draws = np.array([_kendall(ranked[rows], truth[rows]) - _kendall(ref_ranked[rows], truth[rows])
                      for rows in _resamples(len(truth), reps, seed)])
    kept = draws[~np.isnan(draws)]
    interval = ((float(np.percentile(kept, 2.5)), float(np.percentile(kept, 97.5))) if len(kept)
                else (math.nan, math.nan))
    return Paired(proxy, reference, _kendall(ranked, truth) - _kendall(ref_ranked, truth), interval,
                  float(np.mean(kept <= 0)) if len(kept) else math.nan)


@dataclass(frozen=True)
class Row:
    """One proxy's line of the comparison."""

    proxy: str
    n: int
    non_finite: int
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    seconds: float


def evaluate(proxy: str, scores: np.ndarray, truth: np.ndarray, seconds: float, reps: int = 1000, seed: int = 0) -> Row:
    scores = np.asarray(scores, dtype=np.float64)
    return Row(proxy, len(scores), int((~np.isfinite(scores)).sum()), metrics(scores, truth),
               bootstrap(scores, truth, reps, seed), seconds)


def _published(proxy: str, where: tuple[str, str] | None) -> str:
    """The published value for ``proxy`` on ``where`` = (space, dataset), or '' (none, or no ``where``)."""
    entry = PUBLISHED.get(where or ("", ""), {}).get(proxy)
    if entry is None:
        return ""
    metric, value, source = entry
    return f"{metric} {value:.3f} ({source})"


def write_csv(rows: list[Row], path: str | os.PathLike, where: tuple[str, str] | None = None) -> Path:
    head = ["proxy", "n", "non_finite"] + [f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")]
    lines = [",".join(head + ["seconds_per_network", "published"])]
    for r in rows:
        cells = [r.proxy, str(r.n), str(r.non_finite)]
        for m in METRICS:
            cells += [f"{r.values[m]:.4f}", f"{r.intervals[m][0]:.4f}", f"{r.intervals[m][1]:.4f}"]
        lines.append(",".join(cells + [f"{r.seconds:.4f}", _published(r.proxy, where)]))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_per_network(indices: np.ndarray, archs: list[str], columns: dict[str, np.ndarray],
                      path: str | os.PathLike) -> Path:
    """One line per network: its index, architecture and a value per column (full precision), so that
    any other statistic can be computed without scoring again."""
    lines = [",".join(["index", "arch", *columns])]
    for row, index in enumerate(indices):
        lines.append(f"{index},{archs[row]}," + ",".join(repr(float(v[row])) for v in columns.values()))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_per_network(path: str | os.PathLike) -> tuple[list[int], list[str], dict[str, np.ndarray]]:
    """A file of ``write_per_network`` back: indices, architectures and the columns by name."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ZcpError(f"scores file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZcpError(f"scores file {path} is unreadable ({exc})") from None
    header = lines[0].split(",") if lines else []
    if header[:2] != ["index", "arch"] or len(header) < 3:
        raise ZcpError(f"{path} is not a per-network scores file (a header 'index,arch,<columns>', as zcp compare's "
                       "scores.csv)")
    indices, archs, rows = [], [], []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split(",")
        try:
            if len(fields) != len(header):
                raise ValueError(f"{len(fields)} fields, the header has {len(header)}")
            indices.append(int(fields[0]))
            rows.append([float(v) for v in fields[2:]])
        except ValueError as exc:
            raise ZcpError(f"{path}: line {number} is malformed ({exc})") from None
        archs.append(fields[1])
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(header) - 2)
    return indices, archs, {name: values[:, j] for j, name in enumerate(header[2:])}


def write_paired_csv(pairs: list[Paired], path: str | os.PathLike) -> Path:
    lines = ["proxy,reference,kendall_difference,lo,hi,not_above"]
    lines += [f"{p.proxy},{p.reference},{p.difference:.4f},{p.interval[0]:.4f},{p.interval[1]:.4f},{p.not_above:.4f}"
              for p in pairs]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def paired_markdown(pairs: list[Paired], reps: int, where: str = "") -> list[str]:
    """One section per reference proxy, in the order the references first appear in ``pairs``; ``where``
    (e.g. " on cifar10, random held-out") ends each section's title."""
    lines = []
    for ref in dict.fromkeys(p.reference for p in pairs):
        lines += ["", f"## Paired differences against {ref}{where} (Kendall tau)", "",
                  f"Each of {reps} bootstrap resamples draws the same networks for both proxies; \"not above\": the share "
                  f"of resamples in which the proxy's tau is not above {ref}'s (a one-sided bootstrap p-value).", "",
                  f"| proxy | tau - tau({ref}) [95% CI] | not above |", "|---|---|---|"]
        lines += [f"| {p.proxy} | {p.difference:+.3f} [{p.interval[0]:+.3f}, {p.interval[1]:+.3f}] | {p.not_above:.3f} |"
                  for p in pairs if p.reference == ref]
    return lines


def write_markdown(rows: list[Row], path: str | os.PathLike, title: str, where: tuple[str, str] | None = None,
                   energy_rows: list[dict] = (), pairs: list[Paired] = (), reps: int = 1000,
                   notes: list[str] = ()) -> Path:
    """The comparison table (published values for the space and dataset ``where``, all measured on
    random samples or on every network, so not comparable with a stratified sample's rows; ``notes``
    say where scores came from), then (with
    ``pairs``) the paired differences against each reference proxy and (with ``energy_rows``) the energy
    of scoring each proxy."""
    def cell(r: Row, m: str) -> str:
        lo, hi = r.intervals[m]
        return f"{r.values[m]:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = [f"# {title}", "",
             "Values with bootstrap 95% intervals. Non-finite scores rank last (Pearson: finite scores only).", "",
             *(line for note in notes for line in (note, "")),
             "| proxy | N | non-finite | Kendall tau | Spearman rho | Pearson r | top-10% precision | s/network "
             "| published (random samples or all networks) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.proxy} | {r.n} | {r.non_finite} | " + " | ".join(cell(r, m) for m in METRICS)
                     + f" | {r.seconds:.3f} | {_published(r.proxy, where)} |")
    if pairs:
        lines += paired_markdown(list(pairs), reps)
    if energy_rows:
        lines += ["", "## Energy (this run; scores taken from the score cache cost nothing and count no network)", "",
                  *energy_markdown(list(energy_rows))]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _save(fig: object, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def plot_scatter(proxy: str, scores: np.ndarray, truth: np.ndarray, kendall: float, path: Path) -> Path:
    """Proxy score against true accuracy (non-finite scores left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = np.isfinite(scores)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(scores[finite], truth[finite], s=6, alpha=0.5)
    ax.set_xlabel(f"{proxy} score")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{proxy}: Kendall tau {kendall:.3f} (N={finite.sum()})")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_kendall(rows: list[Row], path: Path) -> Path:
    """Bar chart of Kendall tau per proxy with its bootstrap 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tau = np.array([r.values["kendall"] for r in rows])
    # a percentile interval need not contain the estimate (small N, ties): draw what lies on each side
    err = np.array([[max(t - r.intervals["kendall"][0], 0), max(r.intervals["kendall"][1] - t, 0)]
                    for t, r in zip(tau, rows)]).T
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(rows) + 1), 3.8))
    ax.bar(range(len(rows)), tau, yerr=err, capsize=3)
    ax.set_xticks(range(len(rows)), [r.proxy for r in rows], rotation=60, ha="right")
    ax.set_ylabel("Kendall tau (95% CI)")
    ax.axhline(0, color="black", linewidth=0.5)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
