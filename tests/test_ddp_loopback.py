"""The DDP rendezvous store on one machine listens on 127.0.0.1 only (issue 14, item 11).

torch's own ``TCPStore`` binds every interface whatever ``MASTER_ADDR`` says; ``bincount.ddp`` hands it a
loopback socket. The kernel's socket table (``/proc/net/tcp*``) says what really listens. The whole
two-process run with ``trainer=ddp_cpu`` (which uses this strategy) is ``test_train.py::test_ddp_two_processes_on_cpu``.
"""

from __future__ import annotations

import socket
import sys
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the Linux socket table")
LISTEN = "0A"


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == LISTEN:
                found.append(address)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank0_store_listens_on_loopback_and_serves_the_other_ranks():
    from bincount.ddp import loopback_store

    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    with ThreadPoolExecutor(1) as pool:  # rank 0 waits for the other rank to join
        server = pool.submit(loopback_store, port, 0, 2, timedelta(seconds=20))
        client = loopback_store(port, 1, 2, timedelta(seconds=20))
        server = server.result()
    client.set("hello", "rank1")
    assert server.get("hello") == b"rank1"
    assert listeners(port) == ["0100007F"], "only 127.0.0.1 (a wildcard would show 00000000 or ::)"


def test_torch_alone_would_listen_on_every_interface():
    """What the strategy protects against: the plain store with MASTER_ADDR=127.0.0.1 binds the wildcard."""
    from torch.distributed import TCPStore

    port = free_port()
    store = TCPStore("127.0.0.1", port, 1, True, timeout=timedelta(seconds=20))
    store.set("k", "v")
    assert listeners(port) and all(set(a) <= {"0"} for a in listeners(port))


def test_the_strategy_is_what_trainer_ddp_configs_use():
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1] / "conf" / "trainer"
    for name in ("ddp", "ddp_cpu"):
        cfg = OmegaConf.load(root / f"{name}.yaml")
        strategy = OmegaConf.select(cfg, "trainer.strategy._target_") or OmegaConf.select(cfg, "strategy._target_")
        assert strategy == "bincount.ddp.LocalDDPStrategy", name
