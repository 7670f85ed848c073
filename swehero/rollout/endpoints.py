"""Teacher endpoints shared by the distillation workers: least-loaded dispatch and failover.

Each episode borrows the live endpoint with the fewest episodes in flight (ties go to the one listed first) and
returns it when done. An episode that ends in a policy error makes the pool probe that endpoint's `/models`; an
endpoint that does not answer is marked dead, never chosen again, and the episode is retried on another one.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass


class NoLiveEndpoint(RuntimeError):
    """Every teacher endpoint is dead."""


@dataclass
class Endpoint:
    url: str
    """OpenAI API root (`http://host:port/v1`)."""
    in_flight: int = 0
    """Episodes running against it now."""
    served: int = 0
    """Episodes it has been given so far."""
    dead: bool = False


def alive(url: str, timeout: float = 10.0) -> bool:
    """Whether the server answers `GET /models`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class EndpointPool:
    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("no teacher endpoint given")
        self.endpoints = [Endpoint(url) for url in dict.fromkeys(urls)]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self):
        """`with pool.borrow() as endpoint:` the least-loaded live endpoint, counted as busy inside the block."""
        with self._lock:
            live = [e for e in self.endpoints if not e.dead]
            if not live:
                raise NoLiveEndpoint(f"all teacher endpoints are dead: {', '.join(e.url for e in self.endpoints)}")
            chosen = min(live, key=lambda e: e.in_flight)
            chosen.in_flight += 1
            chosen.served += 1
        try:
            yield chosen
        finally:
            with self._lock:
                chosen.in_flight -= 1

    def check(self, endpoint: Endpoint) -> bool:
        """Probe an endpoint after a failure; mark it dead if it does not answer. Returns whether it is alive."""
        if alive(endpoint.url):
            return True
        endpoint.dead = True
        return False

    def report(self) -> list[dict]:
        return [{"url": e.url, "episodes": e.served, "dead": e.dead} for e in self.endpoints]
