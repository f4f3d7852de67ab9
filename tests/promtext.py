"""A strict little parser for the Prometheus text exposition format 0.0.4 (tests only).

Checks what a scraper would reject: malformed lines, bad names/labels/values, TYPE after
samples, duplicate HELP/TYPE, interleaved families, duplicate series, and for histograms
cumulative buckets ending in ``+Inf`` == ``_count`` with a ``_sum``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


class ExpositionError(ValueError):
    pass


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises ExpositionError naming the offending line."""
    if not text.endswith("\n"):
        raise ExpositionError("exposition must end with a newline")
    families: dict[str, Family] = {}
    order: list[str] = []
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            _line(line, families, order, seen_series)
        except ExpositionError as exc:
            raise ExpositionError(f"line {number}: {exc}: {line!r}") from None
    for fam in families.values():
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def _line(line: str, families: dict[str, Family], order: list[str],
          seen: set[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
    if not line.strip():
        return
    if line.startswith("#"):
        _comment(line, families, order)
        return
    name, labels, value = _sample(line)
    fam_name = _family_of(name, families)
    fam = families.setdefault(fam_name, Family(fam_name))
    if order and order[-1] != fam_name and fam_name in order:
        raise ExpositionError(f"samples of {fam_name} are not contiguous")
    if not order or order[-1] != fam_name:
        order.append(fam_name)
    key = (name, tuple(sorted(labels.items())))
    if key in seen:
        raise ExpositionError("duplicate series")
    seen.add(key)
    fam.samples.append((name, labels, value))


def _comment(line: str, families: dict[str, Family], order: list[str]) -> None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return  # a plain comment
    name = parts[2]
    if not NAME.fullmatch(name):
        raise ExpositionError(f"bad metric name {name!r}")
    fam = families.setdefault(name, Family(name))
    if parts[1] == "HELP":
        if fam.help is not None:
            raise ExpositionError("second HELP")
        fam.help = parts[3] if len(parts) > 3 else ""
        return
    kind = parts[3] if len(parts) > 3 else ""
    if kind not in TYPES:
        raise ExpositionError(f"bad type {kind!r}")
    if fam.samples or fam.type != "untyped":
        raise ExpositionError("TYPE after samples or twice")
    fam.type = kind
    if name in order:
        raise ExpositionError("TYPE after samples")


def _family_of(sample_name: str, families: dict[str, Family]) -> str:
    for suffix in HIST_SUFFIXES:
        base = sample_name[: -len(suffix)]
        if sample_name.endswith(suffix) and families.get(base, Family(base)).type == "histogram":
            return base
    return sample_name


def _sample(line: str) -> tuple[str, dict[str, str], float]:
    m = NAME.match(line)
    if not m:
        raise ExpositionError("bad metric name")
    name, rest = m.group(0), line[m.end():]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        labels, rest = _labels(rest[1:])
    if not rest.startswith(" "):
        raise ExpositionError("expected a space before the value")
    fields = rest.strip().split(" ")
    if len(fields) not in (1, 2):
        raise ExpositionError("expected value [timestamp]")
    return name, labels, _value(fields[0])


def _labels(text: str) -> tuple[dict[str, str], str]:
    labels: dict[str, str] = {}
    while True:
        if text.startswith("}"):
            return labels, text[1:]
        m = LABEL_NAME.match(text)
        if not m or text[m.end():m.end() + 2] != '="':
            raise ExpositionError("bad label")
        label, text = m.group(0), text[m.end() + 2:]
        value, text = _label_value(text)
        if label in labels:
            raise ExpositionError(f"duplicate label {label}")
        labels[label] = value
        if text.startswith(","):
            text = text[1:]
        elif not text.startswith("}"):
            raise ExpositionError("expected , or }")


def _label_value(text: str) -> tuple[str, str]:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1:i + 2]
            if nxt not in ("\\", '"', "n"):
                raise ExpositionError(f"bad escape \\{nxt}")
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        elif ch == '"':
            return "".join(out), text[i + 1:]
        elif ch == "\n":
            raise ExpositionError("raw newline in label value")
        else:
            out.append(ch)
            i += 1
    raise ExpositionError("unterminated label value")


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(f"bad value {text!r}") from None


def _check_histogram(fam: Family) -> None:
    by_series: dict[tuple[tuple[str, str], ...], dict[str, list[tuple[float, float]]]] = {}
    for name, labels, value in fam.samples:
        suffix = name[len(fam.name):]
        if suffix not in HIST_SUFFIXES:
            raise ExpositionError(f"{name}: not a histogram sample of {fam.name}")
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        series = by_series.setdefault(base, {s: [] for s in HIST_SUFFIXES})
        if suffix == "_bucket" and "le" not in labels:
            raise ExpositionError(f"{name}: bucket without le")
        le = _value(labels["le"]) if suffix == "_bucket" else math.nan
        series[suffix].append((le, value))
    for base, series in by_series.items():
        buckets = series["_bucket"]
        if not buckets or buckets[-1][0] != math.inf:
            raise ExpositionError(f"{fam.name}{base}: last bucket must be le=+Inf")
        bounds = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        if bounds != sorted(bounds) or counts != sorted(counts):
            raise ExpositionError(f"{fam.name}{base}: buckets not cumulative/ordered")
        if len(series["_count"]) != 1 or len(series["_sum"]) != 1:
            raise ExpositionError(f"{fam.name}{base}: needs one _sum and one _count")
        if series["_count"][0][1] != counts[-1]:
            raise ExpositionError(f"{fam.name}{base}: +Inf bucket != _count")
