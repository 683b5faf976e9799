"""Search spaces (NATS-Bench TSS / SSS, NAS-Bench-101): architecture identity (index <-> official string) and network builders."""
from __future__ import annotations

from evaluation.errors import ZcpError
from evaluation.spaces.base import SearchSpace, check_index, check_space_dataset, space_datasets

__all__ = ["SPACES", "SearchSpace", "check_index", "check_space_dataset", "get_space", "input_modules",
           "space_datasets"]

SPACES = ("tss", "sss", "nb101")


def get_space(name: str) -> SearchSpace:
    """The space called ``name`` ('tss', 'sss' or 'nb101')."""
    if name == "tss":
        from evaluation.spaces.tss import TSS
        return TSS
    if name == "sss":
        from evaluation.spaces.sss import SSS
        return SSS
    if name == "nb101":
        from evaluation.spaces.nb101 import NB101
        return NB101
    raise ZcpError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")


def input_modules(name: str) -> tuple[str, ...]:
    """The modules whose code makes what a network of space ``name`` is and sees: its builder and the image
    loader (roots of the code digests that key terminal and score caches, ``evaluation.code_digest``)."""
    return type(get_space(name)).__module__, "evaluation.images"
