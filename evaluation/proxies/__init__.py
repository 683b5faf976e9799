"""The zoo of hand-designed zero-cost proxies: one module per proxy, each registered by name.

``get_proxy(name).score(model, images, labels)`` scores one network; set-level proxies (AZ-NAS)
return components per network and turn a whole set of networks into scores with
``Proxy.aggregate``. See ``evaluation/proxies/base.py`` for the contract and ``docs/zoo.md`` for the
measured correlations.
"""
from __future__ import annotations

import importlib
import pkgutil

from evaluation.proxies.base import PROXIES, Proxy, get_proxy, proxy_names

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PROXIES", "Proxy", "get_proxy", "proxy_names"]
