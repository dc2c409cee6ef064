"""A real Dagster webserver (dagster-webserver's own app) over a test instance, on a loopback port.

The workspace is empty: what the API asks of it (runs, materializations, a run's log) is the
instance's, so runs made in-process with ``materialize`` against the instance are what it answers.
Import the ``dagster_webserver`` fixture into a test module to use it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from dagster import DagsterInstance, instance_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster_webserver.app import create_app_from_workspace_process_context

from tests.conftest import serve_in_thread


@dataclass(frozen=True)
class DagsterWebserver:
    instance: DagsterInstance
    graphql_url: str


@contextmanager
def serve_dagster_webserver(instance: DagsterInstance, port: int = 0) -> Iterator[str]:
    """Serve ``instance`` on ``port`` (0: a free one) while inside; its GraphQL URL."""
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        app = create_app_from_workspace_process_context(context)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        running = serve_in_thread(app, sock, base_url)
        try:
            yield f"{base_url}/graphql"
        finally:
            running.stop()


@pytest.fixture
def dagster_webserver() -> Iterator[DagsterWebserver]:
    with instance_for_test() as instance, serve_dagster_webserver(instance) as graphql_url:
        yield DagsterWebserver(instance=instance, graphql_url=graphql_url)
