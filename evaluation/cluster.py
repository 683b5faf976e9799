"""Joining a Ray cluster: the address, the driver's node address, the code shipped to workers.

``start_ray`` (evaluation/parallel.py) either starts a private local Ray instance or joins a cluster
on purpose (``--address HOST:PORT``, ``auto`` for the cluster ``ray start`` left on this machine, or
``RAY_ADDRESS``). Joining checks the address in a few seconds instead of letting Ray wait: a
malformed or unreachable address, a cluster without a node on the driver's address, or a cluster of
another Python or Ray version is one line. The project's packages travel to the workers with Ray's
runtime environment (``py_modules``), so workers need only the dependencies (torch, numpy, ...), not
the project; images and cache arrays travel through the object store, never as driver paths.

:class:`LocalCluster` starts a real multi-node cluster on this machine (separate ``ray start``
processes bound to 127.0.0.1, private temp dir and ports) for tests, benchmarks and rehearsals.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError

CONNECT_TIMEOUT = 5.0  # seconds to reach the cluster's GCS port before giving up
NODE_TIMEOUT = 5.0  # seconds to wait for a node of the cluster on the driver's address
PACKAGES = ("evaluation", "primitives", "gp", "experiments")  # the project's code, shipped to workers


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:6379``) -> (host, port); ZcpError naming a malformed address."""
    if address.startswith("ray://"):
        raise ZcpError(f"Ray Client addresses ({address}) are not supported: run zcp on a node of the cluster "
                       f"with --address HOST:PORT, or submit it as a Ray job")
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^\s:/\[\]]+):(\d{1,5})", address)
    port = int(match.group(2) or match.group(4)) if match else 0
    if not match or not 0 < port < 65536:
        raise ZcpError(f"malformed Ray address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    return match.group(1) or match.group(3), port


def bootstrap_address() -> str | None:
    """The address of the cluster ``ray start`` left on this machine (Ray's default temp dir), if it answers."""
    try:
        from ray._private.utils import read_ray_address

        found = read_ray_address()
    except (ImportError, OSError):
        return None
    if not found:
        return None
    try:
        host, port = parse_address(found)
        socket.create_connection((host, port), timeout=1.0).close()
    except (ZcpError, OSError):
        return None
    return found


def driver_node_ip(host: str, port: int) -> str:
    """This machine's address as the cluster at ``host:port`` sees it: the local end of the route to it
    (127.0.0.1 for a cluster bound to the loopback address). No packet is sent."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return s.getsockname()[0]


def code_runtime_env() -> dict[str, Any]:
    """Ray runtime environment that ships the project's packages (as this driver imports them)."""
    import importlib

    modules = [str(Path(importlib.import_module(p).__file__).parent) for p in PACKAGES]
    return {"py_modules": modules, "excludes": ["__pycache__", "*.pyc"]}


def _alive_nodes(gcs_address: str) -> list[dict[str, Any]]:
    """The alive nodes of the cluster (Ray's node table), read from its GCS without joining it."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    from ray._private.state import GlobalState
    from ray._raylet import GcsClientOptions

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # as ray.init does when joining
    state = GlobalState()
    state._initialize_global_state(GcsClientOptions.create(gcs_address, None, allow_cluster_id_nil=True,
                                                           fetch_cluster_id_if_nil=False))
    try:
        return [n for n in state.node_table() if n.get("Alive")]
    finally:
        state.disconnect()


@contextmanager
def _loopback_kept(host: str) -> Iterator[None]:
    """While joining a cluster at a loopback address, keep Ray from replacing that address by this
    machine's routable one (``ray.init`` does, and a cluster bound to 127.0.0.1 answers only there)."""
    from ray._private import services

    resolve = getattr(services, "resolve_ip_for_localhost", None)
    if resolve is None or not ipaddress.ip_address(host).is_loopback:
        yield
        return
    services.resolve_ip_for_localhost = lambda h: h
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


def join(address: str, node_ip: str | None = None, **init: Any) -> str:
    """``ray.init`` joining the cluster at ``address`` ('auto': the one ``ray start`` left on this
    machine), checked first so that a bad address fails in seconds, in one line; returns the address."""
    import ray

    if node_ip is not None:
        try:
            ipaddress.ip_address(node_ip)
        except ValueError:
            raise ZcpError(f"malformed node address {node_ip!r}: expected an IP address such as 10.0.0.5") from None
    if address == "auto":
        found = bootstrap_address()
        if found is None:
            raise ZcpError("--address auto: no running Ray cluster was started on this machine with `ray start`")
        address = found
    host, port = parse_address(address)
    try:
        host = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][4][0]
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ZcpError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc or 'timed out'}") from None
    node_ip = node_ip or driver_node_ip(host, port)
    deadline = time.monotonic() + NODE_TIMEOUT
    while True:
        ips = sorted({n["NodeManagerAddress"] for n in _alive_nodes(f"{host}:{port}")})
        if node_ip in ips or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if node_ip not in ips:
        raise ZcpError(f"the Ray cluster at {address} has no node on this machine's address {node_ip} "
                       f"(its nodes: {', '.join(ips) or 'none'}): run zcp on a node of the cluster, or name "
                       f"this node's address with --node-ip-address")
    with _loopback_kept(host):
        try:
            ray.init(address=f"{host}:{port}", _node_ip_address=node_ip, runtime_env=code_runtime_env(), **init)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise init_error(exc, address) from None
    return address


def init_error(exc: Exception, address: str | None) -> ZcpError:
    """One line for an exception of ``ray.init``: a version mismatch names both sides' versions."""
    text = str(exc)
    if "Version mismatch" in text:
        found = re.findall(r"Ray: (\S+)\s+Python: (\S+)", text)
        if len(found) >= 2:
            (cray, cpy), (dray, dpy) = found[0], found[1]
            return ZcpError(f"the Ray cluster at {address} runs Ray {cray} on Python {cpy}, this driver Ray {dray} "
                            f"on Python {dpy}: install the same versions on both")
    where = f" at {address}" if address else ""
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ZcpError(f"cannot start or join Ray{where}: {first}")


def gpu_share(value: float) -> float:
    """A valid GPU request per task or actor: 0 (none), a fraction below 1 (tasks share a GPU) or a
    whole number; ValueError otherwise (Ray accepts nothing else)."""
    if not (value == 0 or 0 < value < 1 or (value >= 1 and float(value).is_integer())):
        raise ValueError(f"gpus_per_task must be 0, a fraction below 1 or a whole number, got {value!r}")
    return float(value)


def check_resources(gpus: float, actors: int = 0) -> None:
    """Refuse work that Ray would leave pending forever: tasks (1 CPU and ``gpus`` GPUs each) that no
    node can run, or ``actors`` long-lived actors of that size (all needed at once) that the nodes
    cannot hold together."""
    import ray

    room = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node.get("Resources", {})
            cpus = have.get("CPU", 0.0) // 1
            room += int(min(cpus, have.get("GPU", 0.0) // gpus) if gpus else cpus)
    if room >= max(actors, 1):
        return
    size = f"1 CPU{f' and {gpus:g} GPU' if gpus else ''}"
    if actors:
        raise ZcpError(f"{actors} fitness actors of {size} each do not fit the Ray cluster (room for {room}): "
                       f"lower [parallel] workers or gpus_per_task")
    raise ZcpError(f"no node of the Ray cluster offers {size} for a task: start nodes with more CPUs or GPUs, "
                   f"or lower gpus_per_task")


# `ray start` replaces a loopback --node-ip-address by the machine's routable address; test clusters
# keep 127.0.0.1 (as ray.cluster_utils does), so that no node advertises an address off the loopback.
_RAY_START = ("import sys; from ray._private import services; services.resolve_ip_for_localhost = lambda h: h; "
              "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A Ray cluster of separate ``ray start`` processes on this machine, every node bound to 127.0.0.1.

    Private temp dir and ports (another Ray instance on the machine is neither joined nor stopped);
    ``close`` (also on ``with`` exit) kills every process of its nodes by process session. The head
    records its address where Ray looks for the cluster ``ray start`` left on a machine whose
    ``RAY_TMPDIR`` is :attr:`root` (what ``--address auto`` joins)."""

    def __init__(self, python: str | None = None, object_store_mb: int = 80) -> None:
        self.python = python or sys.executable
        self.root = Path(tempfile.mkdtemp(prefix="zr", dir="/tmp"))  # short: Ray's socket paths are limited
        self.object_store = object_store_mb * 2**20
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
        # Ray's token authentication, as drivers on this machine use it (ray.init turns it on when
        # ~/.ray/auth_token exists, and creates that file for local instances)
        _ensure_token()
        self.env = {**base, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        self.nodes: list[subprocess.Popen] = []
        self.address = ""

    def _start(self, args: list[str]) -> subprocess.Popen:
        cmd = [self.python, "-c", _RAY_START, "start", "--block", "--node-ip-address", "127.0.0.1",
               f"--object-store-memory={self.object_store}", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
               f"--runtime-env-agent-port={_free_port()}", *args]
        with open(self.root / f"node{len(self.nodes)}.log", "wb") as log:  # the node's cwd: no project there
            proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.nodes.append(proc)
        return proc

    def start_head(self, num_cpus: int = 1, num_gpus: int = 0, timeout: float = 120) -> str:
        """Start the head node; returns the cluster address."""
        port = _free_port()
        self._start(["--head", f"--port={port}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                     "--include-dashboard=false", f"--dashboard-port={_free_port()}",
                     f"--temp-dir={self.root / 'ray'}"])
        self.address = f"127.0.0.1:{port}"
        self._wait(1, timeout)
        deadline = time.monotonic() + timeout  # `ray start` records the address just after the node is up
        while not (self.root / "ray" / "ray_current_cluster").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.address

    def add_node(self, num_cpus: int = 1, num_gpus: int = 0, timeout: float = 120) -> subprocess.Popen:
        """Start one more node joining the head; waits until the cluster counts it."""
        proc = self._start([f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"])
        self._wait(len(self.nodes), timeout)
        return proc

    def alive(self) -> int:
        """Number of alive nodes the cluster's GCS reports (0 while its port does not answer)."""
        try:
            socket.create_connection(parse_address(self.address), timeout=1.0).close()
        except OSError:
            return 0
        return len(_alive_nodes(self.address))

    def _wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() < count:
            if any(p.poll() is not None for p in self.nodes) or time.monotonic() > deadline:
                tail = (self.root / f"node{len(self.nodes) - 1}.log").read_text(errors="replace")[-2000:]
                self.close()
                raise RuntimeError(f"local Ray cluster did not reach {count} node(s); last node's log:\n{tail}")
            time.sleep(0.5)

    def kill_node(self, proc: subprocess.Popen) -> None:
        """Kill one node and every process it started (as a machine failing would)."""
        deadline = time.monotonic() + 10
        while _session_pids(proc.pid) and time.monotonic() < deadline:
            _kill_session(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
        proc.wait()

    def close(self) -> None:
        """Kill every process of every node (a SIGTERM'd node drains for 30 s) and remove the temp dir."""
        for proc in reversed(self.nodes):
            self.kill_node(proc)
        self.nodes = []
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure_token() -> None:
    from ray._private.authentication.authentication_token_setup import generate_and_save_token
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        generate_and_save_token()
        AuthenticationTokenLoader.instance().reset_cache()


def _session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z" and os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (OSError, IndexError):
                pass
    return pids


def _kill_session(sid: int, sig: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
