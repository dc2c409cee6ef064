"""What ``make run`` does with its services: start them in order, restart one that crashes, stop them all.

A crash of one service (dagster killed by the OOM killer, the embedded AWS killed by hand) used to
stop the whole stack; now that service alone is restarted and the others keep running, their
state and connections intact. Each restart is printed, and the ``NAME: URL`` line again once the
service answers. A service that keeps crashing must still end the stack rather than loop forever:
at most ``max_restarts`` restarts of one service within ``window_seconds``; the next crash in the
window stops the stack with exit code 1 and a message naming the service and the bound. A restart
that never answers its health check counts like a crash.

Only an exit of a service's own process (the group leader) counts as a crash; what it started
(dagster dev's webserver, daemon and code server) is killed with it before the restart, since
those still hold the ports the new one needs.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Sequence

from local_stack.services import Service, ServiceFailed

HEALTH_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.5
# A crashed service's leftovers get this long to end on SIGTERM before SIGKILL; they are orphans
# already, so there is no clean shutdown to wait for.
LEFTOVER_GRACE_SECONDS = 2.0


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def describe_window(seconds: float) -> str:
    """``600`` -> ``10 min``, ``90`` -> ``90 s``: how the bound reads in a message."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class RestartBudget:
    """At most ``max_restarts`` restarts per service within any ``window_seconds``."""

    def __init__(
        self, max_restarts: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self._clock = clock
        self._restarts: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def recent(self, name: str) -> int:
        """Restarts of ``name`` within the window up to now."""
        restarts = self._restarts[name]
        horizon = self._clock() - self.window_seconds
        while restarts and restarts[0] <= horizon:
            restarts.popleft()
        return len(restarts)

    def take(self, name: str) -> int | None:
        """Count a restart of ``name`` now and return its number in the window; None past the bound."""
        if self.recent(name) >= self.max_restarts:
            return None
        self._restarts[name].append(self._clock())
        return len(self._restarts[name])

    def describe(self) -> str:
        return f"{self.max_restarts} in {describe_window(self.window_seconds)}"


class Supervisor:
    """The stack's services: started in order, a crashed one restarted within the budget, all stopped."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        max_restarts: int,
        window_seconds: float,
        should_stop: Callable[[], bool] = lambda: False,
        health_timeout: float = HEALTH_TIMEOUT_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        say: Callable[[str], None] = _say,
        complain: Callable[[str], None] = _complain,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = list(services)
        self.budget = RestartBudget(max_restarts, window_seconds, clock)
        self.should_stop = should_stop
        self.health_timeout = health_timeout
        self.poll_seconds = poll_seconds
        self.say = say
        self.complain = complain

    def start_all(self) -> bool:
        """Start each service and wait until it answers; False when a stop came first.

        A service that fails at this first start raises ServiceFailed: that is a broken setup
        (a taken port, a bad config), which restarting would only repeat.
        """
        for service in self.services:
            if self.should_stop():
                return False
            service.start()
            if not service.wait_healthy(self.health_timeout, self.should_stop):
                return False
            self.say(f"{service.name}: {service.url}")
        return not self.should_stop()

    def watch(self) -> int:
        """Restart services that exit until a stop is requested (0) or a restart budget runs out (1)."""
        while not self.should_stop():
            for service in self.services:
                # No restart once a stop is requested: the service may have exited because of it.
                if service.exited() and not self.should_stop() and not self._recover(service):
                    return 1
            time.sleep(self.poll_seconds)
        return 0

    def stop_all(self) -> None:
        # Reverse order: dagster and the API go before the stand-ins they talk to.
        for service in reversed(self.services):
            service.stop()

    def _recover(self, service: Service) -> bool:
        """Restart ``service`` until it answers again; False once its budget is spent."""
        assert service.process is not None
        what = f"stopped unexpectedly (exit code {service.process.returncode}, see {service.log_path})"
        while True:
            # Whatever the crashed leader started is still running and holding ports.
            service.stop(grace_seconds=LEFTOVER_GRACE_SECONDS)
            if self.should_stop():
                return True
            number = self.budget.take(service.name)
            if number is None:
                self.complain(
                    f"{service.name} {what}; it was restarted {self.budget.max_restarts} times within "
                    f"{describe_window(self.budget.window_seconds)} already (supervisor.max_restarts, "
                    f"supervisor.restart_window_seconds); stopping the stack"
                )
                return False
            self.complain(f"{service.name} {what}; restarting it ({number} of {self.budget.describe()})")
            service.start()
            try:
                if not service.wait_healthy(self.health_timeout, self.should_stop):
                    return True  # stopping: stop_all ends the half-started service with the rest
            except ServiceFailed:
                # A restart that does not come up is a failed restart: another try, within the budget.
                if service.exited() and service.process is not None:
                    what = (
                        f"did not come back (exit code {service.process.returncode}, see {service.log_path})"
                    )
                else:
                    what = (
                        f"did not come back (no answer at {service.health_url} within "
                        f"{self.health_timeout:g} s, see {service.log_path})"
                    )
                continue
            self.say(f"{service.name}: {service.url}")
            return True
