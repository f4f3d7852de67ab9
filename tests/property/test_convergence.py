"""Convergence of ReplicaModel replicas: the machine in ``convergence.py`` (docs/correctness.md)."""

from __future__ import annotations

from convergence import ConvergenceMachine

TestConvergence = ConvergenceMachine.TestCase
