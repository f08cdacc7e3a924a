"""Live sessions of both transports: reservations, the global and per-address caps, and the
session gauge (one place for all three)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from server.config import ServerConfig
from server.errors import CapacityError
from server.metrics import Metrics

if TYPE_CHECKING:
    from server.session import FrameSession


class Peer(Protocol):
    """One connected client of any transport (``transports.webrtc``, ``transports.ws_stream``)."""

    sid: str
    ip: str
    transport: str
    session: FrameSession

    async def close(self) -> None:
        """Close everything of this peer and free its slot; idempotent."""
        ...


@dataclass
class Registry:
    """Live peers and their sessions by id, with global and per-address caps.

    A slot is claimed with :meth:`reserve` before a peer is set up, turned into a live peer
    with :meth:`add`, and freed with :meth:`release` (of the peer, or of the unused
    reservation).
    """

    cfg: ServerConfig
    metrics: Metrics
    sessions: dict[str, FrameSession] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)
    by_ip: dict[str, int] = field(default_factory=dict)
    #: Slots claimed by offers/streams still being set up (not yet in ``sessions``).
    _reserved: int = 0

    def reserve(self, ip: str) -> None:
        """Claim a slot for ``ip`` or raise CapacityError."""
        if len(self.sessions) + self._reserved >= self.cfg.max_sessions:
            raise CapacityError(f"server at capacity (session limit {self.cfg.max_sessions}); "
                                f"try again later")
        if self.by_ip.get(ip, 0) >= self.cfg.max_sessions_per_ip:
            raise CapacityError(f"too many sessions from your address "
                                f"(limit {self.cfg.max_sessions_per_ip})")
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        self._reserved += 1

    def add(self, peer: Peer) -> None:
        """Turn ``peer``'s reservation into a live session."""
        self._reserved -= 1
        self.sessions[peer.sid] = peer.session
        self.peers[peer.sid] = peer
        self.metrics.sessions.labels(peer.transport).inc()

    def release(self, ip: str, peer: Peer | None = None) -> None:
        """Free the slot of ``peer`` (if it was added) or of an unused reservation of ``ip``."""
        if peer is not None and self.peers.pop(peer.sid, None) is not None:
            self.sessions.pop(peer.sid, None)
            self.metrics.sessions.labels(peer.transport).dec()
        else:
            self._reserved -= 1
        n = self.by_ip.get(ip, 0) - 1
        if n > 0:
            self.by_ip[ip] = n
        else:
            self.by_ip.pop(ip, None)
