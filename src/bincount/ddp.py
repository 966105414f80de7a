"""DDP on one machine whose rendezvous listens on 127.0.0.1 only (``trainer=ddp``, ``trainer=ddp_cpu``).

Why: torch's rendezvous store (``TCPStore``) answers anyone who connects, without authentication, and
binds every interface (``::``) whatever ``MASTER_ADDR`` says: ``MASTER_ADDR`` only tells the other ranks
where to connect. Anyone on the network could then read or write the store while a run starts, and
gloo's own sockets follow the host name's address (usually the public interface). On one machine
nothing needs to come from outside, so rank 0 hands ``TCPStore`` a socket already bound to 127.0.0.1
(``master_listen_fd``) and gloo is told to use the loopback interface (``GLOO_SOCKET_IFNAME``, unless set).

Several machines (``trainer.num_nodes > 1``) or processes started by torchrun/SageMaker (their own
rendezvous) keep Lightning's behaviour: the store must be reachable from the other hosts, so the
network around them is the boundary (docs/security.md).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy

LOOPBACK = "127.0.0.1"


def loopback_interface() -> str:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), for gloo."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return min(names, key=len) if names else "lo"


def loopback_store(port: int, rank: int, world_size: int, timeout: timedelta):
    """The rendezvous store on 127.0.0.1:``port``: rank 0 serves it, the other ranks connect to it."""
    from torch.distributed import TCPStore

    if rank != 0:
        return TCPStore(LOOPBACK, port, world_size, False, timeout=timeout)
    server = socket.create_server((LOOPBACK, port))  # SO_REUSEADDR, as TCPStore's own bind does
    # detach(): the store owns the descriptor now; Python must not close it when ``server`` is collected.
    return TCPStore(LOOPBACK, port, world_size, True, timeout=timeout, master_listen_fd=server.detach())


class LocalDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that joins its ranks through a loopback-only store when they all run on this machine."""

    def _is_local(self) -> bool:
        return self.num_nodes == 1 and type(self.cluster_environment) is LightningEnvironment

    def setup_distributed(self) -> None:
        import torch.distributed as dist

        if self._is_local() and not dist.is_initialized():
            self.set_world_ranks()
            env = self.cluster_environment
            os.environ["MASTER_ADDR"] = LOOPBACK  # what Lightning's launcher passes to the other ranks too
            os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
            store = loopback_store(env.main_port, env.global_rank(), env.world_size(), self._timeout)
            device = self.root_device if self.root_device.type != "cpu" else None
            dist.init_process_group(self._get_process_group_backend(), store=store, rank=env.global_rank(),
                                    world_size=env.world_size(), timeout=self._timeout, device_id=device)
        super().setup_distributed()  # the group exists: Lightning's own connection step returns early
