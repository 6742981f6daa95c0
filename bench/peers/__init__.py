"""Peer task queues measured the same way as taskutils: see base.py for the measurement and each
``<peer>_peer.py`` docstring for how that peer is configured. Install them with `pip install -e .[bench]`."""

from .arq_peer import ArqPeer
from .base import Peer
from .celery_peer import CeleryPeer
from .dramatiq_peer import DramatiqPeer
from .huey_peer import HueyPeer
from .rq_peer import RqPeer
from .saq_peer import SaqPeer
from .taskiq_peer import TaskiqPeer

PEERS: dict[str, type[Peer]] = {
    "huey": HueyPeer,
    "dramatiq": DramatiqPeer,
    "taskiq": TaskiqPeer,
    "saq": SaqPeer,
    "celery": CeleryPeer,
    "rq": RqPeer,
    "arq": ArqPeer,
}
