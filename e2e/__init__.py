"""End-to-end runs of the delivered edge stack (ENV=beta) without Docker.

A bundle comes from an order through the real delivery code (``e2e.bundle``), its compose file
is read (``e2e.compose``), and the stack runs as processes in a network namespace of its own
(``e2e.stack``, ``e2e.netns``, ``e2e.mountns``), checked by the scenarios of ``e2e.scenarios``.
``python -m e2e`` runs them all; ``e2e.runner`` is the API the tests use.
"""
