"""Reliability suite (issue 6): crash safety and network faults against the real stack."""
