"""Fault injection for tests: a loopback TCP proxy, backend fault hooks, retry timing.

Importable from any test as ``faults.proxy`` / ``faults.schedule`` / ``faults.backend``
(``tests/`` is on ``sys.path`` because the root conftest lives there). See
docs/reliability.md, section "Fault injection".
"""
