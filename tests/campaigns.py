"""A tiny campaign config for tests: 12 + 12 networks, batch 4, Gaussian images, a few terminals."""
from pathlib import Path

TINY = """
[campaign]
space = "{space}"
datasets = ["cifar10"]
[sample]
search_n = 12
heldout_n = 12
[cache]
batch_size = 4
images = "gaussian"
terminals = {terminals}
dir = "{cache_dir}"
[gp]
population = {population}
generations = {generations}
[parallel]
backend = "{backend}"
"""
TERMS = '["params", "flops", "code_kernel", "chan_corr_eig", "act_std", "snip"]'


def tiny_config(folder: Path, cache_dir: Path, generations: int = 4, backend: str = "serial",
                population: int = 24, space: str = "tss") -> Path:
    """Write the tiny config as ``folder/c.toml`` (caches in ``cache_dir``) and return its path."""
    path = folder / "c.toml"
    path.write_text(TINY.format(terminals=TERMS, cache_dir=cache_dir, generations=generations, backend=backend,
                                population=population, space=space))
    return path
