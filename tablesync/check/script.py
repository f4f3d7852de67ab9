"""The readable record of one example: who wrote what, when each replica synced.

The state machine adds one line per step as it runs; when an example fails, Hypothesis
replays the shrunk example last, so the script held at the end is the shrunk one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["Script", "short"]


def short(value: Any, width: int = 24) -> str:
    """``value`` as a short repr (long texts and bytes cut with an ellipsis)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def row_text(data: Mapping[str, Any], keep: int = 4) -> str:
    """A few ``column=value`` pairs of a written row."""
    items = [f"{k}={short(v)}" for k, v in data.items()]
    more = f", +{len(items) - keep} more" if len(items) > keep else ""
    return ", ".join(items[:keep]) + more


@dataclass
class Script:
    """Steps of one example, in order (``who: what``)."""

    steps: list[str] = field(default_factory=list)

    def add(self, who: str, what: str) -> None:
        self.steps.append(f"{who}: {what}")

    def __len__(self) -> int:
        return len(self.steps)

    def collapsed(self) -> list[str]:
        """The steps with runs of the same step written once (``... (x3)``)."""
        out: list[str] = []
        count = 0
        for i, step in enumerate(self.steps):
            count += 1
            if i + 1 < len(self.steps) and self.steps[i + 1] == step:
                continue
            out.append(step if count == 1 else f"{step} (x{count})")
            count = 0
        return out

    def render(self) -> str:
        """One numbered line per step (repeats collapsed)."""
        lines = self.collapsed()
        width = len(str(len(lines)))
        return "\n".join(f"{i:>{width}}. {s}" for i, s in enumerate(lines, 1))
