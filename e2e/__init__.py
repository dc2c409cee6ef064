"""End-to-end runs of the delivered edge stack (ENV=beta).

A bundle comes from an order through the real delivery code (``e2e.bundle``) and its stack runs
either as delivered, ``docker compose --profile fixtures up`` of the bundle on a Docker engine
(``e2e.container_stack``), or without Docker, its compose file read (``e2e.compose``) and the
services run as processes in a network namespace of their own (``e2e.stack``, ``e2e.netns``,
``e2e.mountns``). The scenarios of ``e2e.scenarios`` check either. ``python -m e2e [--docker]``
runs them all; ``e2e.runner`` is the API the tests use.
"""
