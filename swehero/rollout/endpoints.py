"""Model endpoints for the attempts: which servers they talk to (listed ones, or a vLLM server started for the
run), least-loaded dispatch and failover.

Each attempt borrows the live endpoint with the fewest attempts in flight and returns it when done. Ties go to the
first in list order from the pool's `first` on: processes sharing a list (distill's shards) each start at their
own place, so that together they fill every endpoint, not all the first ones. An attempt that ends in an `agent_error` makes the pool probe that endpoint's `/models`; an
endpoint that does not answer is marked dead, never chosen again, and the attempt is retried on another one. When
none is left the run stops, committing nothing for the attempts that found them dead.

A server can answer the probe and still fail every attempt (its API process up, its engine dead: a 500 at once; or
requests that never return). Always the least loaded, it would take most of the run's attempts. So the pool counts
the attempts that fail for each endpoint in a row (the runner tells which, `EndpointPool.ended`): after
`FAILURES_IN_ROW` it is benched, chosen only when no other live endpoint is ready, for `BENCH_S`; then it is on
trial, given one attempt at a time until one does not fail for it (a failure benches it again).
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from swehero.agent.loop import LoopConfig
from swehero.agent.run import check_ready
from swehero.agent.settings import AgentSettings
from swehero.errors import InputError, Unavailable
from swehero.serve.server import ServeConfig


FAILURES_IN_ROW = 3
"""Attempts failing for an endpoint in a row that bench it: few enough that a failing teacher costs the run a few
attempts, each retried elsewhere; more than one, so that a single bad request does not."""
BENCH_S = 600.0
"""How long a benched endpoint gets no attempt while another live one is ready (a server restarting is back within
minutes)."""


class NoLiveEndpoint(Unavailable):
    """Every endpoint is dead. The run stops rather than commit its remaining attempts as agent errors, which a
    resume would never redo."""


class EndpointRefusesRequests(InputError):
    """An endpoint refuses the attempts' requests themselves (HTTP 401, 403, 404: a missing key, a misspelt model
    name). The run stops rather than commit every attempt as an agent error, a finished report of 0% that a rerun
    with the settings mended would refuse to touch (made with other settings)."""


@dataclass
class Endpoint:
    url: str
    """OpenAI API root (`http://host:port/v1`)."""
    replica: int | None = None
    """One replica of a server with data parallelism, which every request of an attempt goes to: an episode's turns
    then find their shared prefix in that replica's cache (vLLM would send each turn to its least busy replica)."""
    in_flight: int = 0
    """Episodes running against it now."""
    served: int = 0
    """Episodes it has been given so far."""
    failed: int = 0
    """Of those, how many failed for it (`EndpointPool.ended`)."""
    failures_in_row: int = 0
    benched_until: float = 0.0
    """`time.monotonic()` until which it is benched, after `FAILURES_IN_ROW` failures in a row."""
    dead: bool = False

    def ready(self, now: float) -> bool:
        """Whether it may be chosen while other live endpoints are ready: not benched, or on trial with no attempt in
        flight."""
        return self.failures_in_row < FAILURES_IN_ROW or (self.benched_until <= now and not self.in_flight)


def alive(url: str, timeout: float = 10.0) -> bool:
    """Whether the server answers `GET /models`, with its list or a refusal: a teacher behind an API key answers the
    probe, which sends none, 401, and is up (a key it refuses stops the attempts themselves, EndpointRefused). A
    5xx is a server that cannot serve."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class EndpointPool:
    def __init__(self, endpoints: list[str | Endpoint], first: int = 0) -> None:
        if not endpoints:
            raise ValueError("no teacher endpoint given")
        # `.../v1/` and `.../v1` are one server: listed twice, it would get twice the share
        given = [replace(e, url=e.url.rstrip("/")) if isinstance(e, Endpoint) else Endpoint(e.rstrip("/"))
                 for e in endpoints]
        self.endpoints = list({(e.url, e.replica): e for e in given}.values())
        first %= len(self.endpoints)
        self._tie_order = self.endpoints[first:] + self.endpoints[:first]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, instead_of: Endpoint | None = None):
        """`with pool.borrow() as endpoint:` the least-loaded ready endpoint, counted as busy inside the block; one
        other than `instead_of` where another is ready. When none is ready, the least-loaded live one: a benched
        endpoint still serves while no other can."""
        with self._lock:
            chosen = min(self._choices(instead_of), key=lambda e: (e.in_flight, self._tie_order.index(e)))
            chosen.in_flight += 1
            chosen.served += 1
        try:
            yield chosen
        finally:
            with self._lock:
                chosen.in_flight -= 1

    def _choices(self, instead_of: Endpoint | None) -> list[Endpoint]:
        live = [e for e in self.endpoints if not e.dead]
        if not live:
            raise NoLiveEndpoint(f"no model endpoint answers (GET /models) any more: "
                                 f"{', '.join(e.url for e in self.endpoints)}; the attempts committed are kept, "
                                 "and the same command resumes with the rest once one answers")
        now = time.monotonic()
        ready = [e for e in live if e.ready(now)] or live
        if instead_of is None:
            return ready
        # a retry goes to another endpoint, a benched one rather than the one it failed on
        return [e for e in ready if e is not instead_of] or [e for e in live if e is not instead_of] or ready

    def ended(self, endpoint: Endpoint, failed: bool) -> None:
        """An attempt on `endpoint` ended, `failed` for it or not: count it, and bench the endpoint at its
        `FAILURES_IN_ROW`-th failure in a row (and at each after, its trials')."""
        with self._lock:
            endpoint.failed += failed
            endpoint.failures_in_row = endpoint.failures_in_row + 1 if failed else 0
            if endpoint.failures_in_row >= FAILURES_IN_ROW:
                endpoint.benched_until = time.monotonic() + BENCH_S

    def others_live(self, endpoint: Endpoint) -> bool:
        """Whether a live endpoint other than `endpoint` is left, for an attempt that failed on it to retry."""
        with self._lock:
            return any(not e.dead and e is not endpoint for e in self.endpoints)

    def check(self, endpoint: Endpoint) -> bool:
        """Probe an endpoint after a failure; mark it dead if it does not answer. Returns whether it is alive."""
        if alive(endpoint.url):
            return True
        endpoint.dead = True
        return False

    def report(self) -> list[dict]:
        return [{"url": e.url, **({"replica": e.replica} if e.replica is not None else {}), "episodes": e.served,
                 "failed": e.failed, "dead": e.dead} for e in self.endpoints]


def rollout_server() -> ServeConfig:
    """The default server a rollout starts for its policy: one that takes the agent's whole context (the paper's
    128k), where `swehero serve`'s own default is 32k."""
    return ServeConfig(max_model_len=LoopConfig.max_context_tokens)


def serves_here(settings: AgentSettings, endpoints: list[str], serve: ServeConfig) -> bool:
    """Whether `serving` starts a vLLM server: the policy queries a model that no endpoint offers."""
    return settings.policy == "openai" and not (endpoints or settings.openai.base_url) and bool(serve.model)


@contextlib.contextmanager
def serving(settings: AgentSettings, endpoints: list[str], serve: ServeConfig, log_dir: Path):
    """`with serving(...) as (settings, endpoints)`: the endpoints the attempts use (URLs, or `Endpoint`s), and the
    settings naming the model.

    Listed `endpoints` first, else the agent's own `openai.base_url`, else a vLLM server started here for
    `serve.model` and stopped on exit, one endpoint per replica when it has several (`serve.data_parallel_size`).
    Policies that query no model get no endpoint. First, before a server starts, it checks that attempts can run
    here at all (`check_ready`)."""
    check_ready(settings)
    if settings.policy != "openai":
        yield settings, []
    elif endpoints or settings.openai.base_url:
        yield settings, list(endpoints) or [settings.openai.base_url]
    elif not serve.model:
        raise InputError("the openai policy needs a model endpoint (endpoints / agent.openai.base_url) or a "
                         "checkpoint to serve (serve.model)")
    else:
        from swehero.serve.server import VLLMServer

        with VLLMServer(serve, Path(log_dir) / "vllm.log") as server:
            openai = replace(settings.openai, base_url=server.url, model=settings.openai.model or serve.name,
                             api_key_env=server.key_env or settings.openai.api_key_env)
            replicas = range(serve.data_parallel_size) if serve.data_parallel_size > 1 else [None]
            yield replace(settings, openai=openai), [Endpoint(server.url, replica) for replica in replicas]
