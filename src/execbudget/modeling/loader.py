"""
Reading graph specs from YAML, TOML or plain data, and the traces they point to.

``load_graph(path)`` reads the file, loads every ``empirical`` trace it names (CSV with a
header row, or JSON lines; paths relative to the graph file), validates the fields with
pydantic and the structure with :func:`~execbudget.modeling.validate.check_graph`. Any
problem becomes a :class:`~execbudget.modeling.validate.GraphError` (a
``ConfigurationError``) whose lines name the node and the field.
"""

from __future__ import annotations

import csv
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .spec import GraphSpec
from .validate import GraphError, check_graph

#: Tags pydantic puts in error locations for union members; they are not field names.
_UNION_TAGS = frozenset(
    {"model", "tool", "agent_loop", "fan_out", "env", "dist"}
    | {"fixed", "lognormal", "negbin", "poisson", "empirical"}
    | {"float", "str", "list[Branch]", "BinnedP", "literal['rest']"}
)


def load_graph(path: str | Path) -> GraphSpec:
    """Load, validate and return the graph in ``path`` (``.yaml``, ``.yml`` or ``.toml``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise GraphError(str(path), [f"not valid YAML/TOML: {exc}".replace("\n", " ")]) from None
    return graph_from_dict(data, source=str(path), base_dir=path.parent)


def graph_from_dict(
    data: Any, *, source: str = "<dict>", base_dir: str | Path | None = None
) -> GraphSpec:
    """Validate plain data (as parsed from YAML/TOML) into a checked :class:`GraphSpec`."""
    if not isinstance(data, Mapping):
        raise GraphError(source, [f"the top level must be a mapping, found {type(data).__name__}"])
    problems: list[str] = []
    data = _load_traces(data, Path(base_dir) if base_dir is not None else Path.cwd(), problems)
    if problems:
        raise GraphError(source, problems)
    try:
        spec = GraphSpec.model_validate(data)
    except ValidationError as exc:
        raise GraphError(source, _describe_all(exc.errors())) from None
    check_graph(spec, source)
    return spec


def read_trace(path: Path, column: str | None) -> list[float]:
    """Numbers from a CSV (header row; ``column`` picks one) or JSON-lines trace."""
    text = path.read_text(encoding="utf-8")
    values: list[float] = []
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if isinstance(row, Mapping):
                if column is None:
                    if len(row) != 1:
                        raise ValueError(f"line {n} has several fields; give column:")
                    row = next(iter(row.values()))
                else:
                    if column not in row:
                        raise ValueError(f"line {n} has no field {column!r}")
                    row = row[column]
            values.append(_number(row, f"line {n}"))
        return values
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    if column is None:
        if len(fields) != 1:
            raise ValueError(f"the CSV has columns {fields}; give column:")
        column = fields[0]
    if column not in fields:
        raise ValueError(f"the CSV has no column {column!r} (columns: {fields})")
    for n, row in enumerate(reader, 2):
        values.append(_number(row[column], f"row {n}"))
    return values


def _number(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if out != out or out < 0 or out in (float("inf"),):
        raise ValueError(f"{where}: {value!r} must be a finite number >= 0")
    return out


def _load_traces(data: Any, base: Path, problems: list[str], path: str = "") -> Any:
    """Copy of ``data`` with every ``{dist: empirical, file: ...}`` given its values."""
    if isinstance(data, Mapping):
        out = {
            k: _load_traces(v, base, problems, f"{path}.{k}" if path else str(k))
            for k, v in data.items()
        }
        if out.get("dist") == "empirical" and out.get("file") and out.get("values") is None:
            file = base / str(out["file"])
            try:
                out["values"] = read_trace(file, out.get("column"))
            except (OSError, ValueError) as exc:
                problems.append(f"{_where(path)}: trace {str(out['file'])!r}: {exc}")
        return out
    if isinstance(data, list):
        return [_load_traces(v, base, problems, f"{path}[{i}]") for i, v in enumerate(data)]
    return data


def _where(path: str) -> str:
    parts = path.split(".")
    if len(parts) >= 2 and parts[0] == "nodes":
        return f"node {parts[1]!r}" + (f": {'.'.join(parts[2:])}" if len(parts) > 2 else "")
    if len(parts) >= 4 and parts[0] == "subgraphs" and parts[2] == "nodes":
        rest = ".".join(parts[4:])
        return f"subgraph {parts[1]!r}, node {parts[3]!r}" + (f": {rest}" if rest else "")
    if len(parts) >= 2 and parts[0] == "envelope":
        return f"envelope variable {parts[1]!r}"
    return path or "<top level>"


def _describe_all(errors: list[Any]) -> list[str]:
    """
    Pydantic errors as ``node 'x': field: problem (found ...)``.

    A union (``next`` is a name or branches, ``p`` a number, ``rest`` or bins) fails once
    per alternative; the alternatives of one field are joined, and a field whose inner
    fields have errors of their own is left out, so each problem is said once.
    """
    by_path: dict[str, list[str]] = {}
    found: dict[str, str] = {}
    for error in errors:
        path = ".".join(str(p) for p in error.get("loc", ()) if str(p) not in _UNION_TAGS)
        kind = error.get("type", "")
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        if msg not in by_path.setdefault(path, []):
            by_path[path].append(msg)
        if kind != "missing" and "input" in error and not isinstance(error["input"], Mapping):
            found.setdefault(path, f" (found {error['input']!r})")
    out = []
    for path, msgs in by_path.items():
        if any(other.startswith(path + ".") for other in by_path):
            continue
        out.append(f"{_where(path)}: {'; or: '.join(msgs)}{found.get(path, '')}")
    return out


__all__ = ["graph_from_dict", "load_graph", "read_trace"]
