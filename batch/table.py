"""Reading a batch table: CSV (a header row) or JSONL (one object a line), one row = one job.

Columns are `NODE_ID.INPUT` exactly like `--set`, or a bare input name when exactly one value input
in the workflow has it; `id` names the row's outputs. Cells are typed by the same rule as `--set`
(cli.parse_value). An empty cell — or null, or a missing key in JSONL — keeps the workflow's value.
Every problem is collected, so a bad table is reported whole, one line per problem.
"""

from __future__ import annotations

import csv
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli import UsageError, parse_value, value_input
from nodegraph.graph import id_order

ID_COLUMN = "id"


class TableError(Exception):
    """The table (or the plan made from it) has problems; `lines` holds each, ready to print."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class Row:
    number: int  # 1 for the first row under the header (the first line of a JSONL file)
    line: int  # where the row starts in the file, for messages
    id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # "7.seed" → 42, in column order
    bad: bool = False  # a cell could not be read: the row is reported, not validated


@dataclass
class Table:
    rows: list[Row]
    problems: list[tuple[int, str]]  # (line, "rows.csv:LINE: what is wrong"), to merge with validation's


def read_table(path: Path, graph, registry) -> Table:
    """The typed rows of `path` and every problem found in it; TableError if it cannot be read at all."""
    where = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
        is_json = path.suffix.lower() in (".jsonl", ".ndjson") or text.lstrip().startswith("{")
        header_line, entries = (0, _jsonl_rows(text)) if is_json else _csv_rows(
            text, "\t" if path.suffix.lower() == ".tsv" else ",")
    except (OSError, UnicodeDecodeError) as e:
        raise TableError([f"{where}: cannot read the table: {getattr(e, 'strerror', None) or e}"]) from None
    except TableError as e:
        raise TableError([f"{where}:{problem}" for problem in e.lines]) from None
    columns = _Columns(graph, registry)
    rows, problems = [], []
    for number, (line, cells, broken) in enumerate(entries, 1):
        row = Row(number, line, bad=bool(broken))
        rows.append(row)
        if broken:
            problems.append((line, f"{where}:{line}: {broken}"))
            continue
        for header, raw in cells.items():
            target, spec, problem = columns.resolve(header)
            if problem:
                if header not in columns.reported:  # a bad column is reported once, where it is named
                    columns.reported.add(header)
                    problems.append((header_line or line, f"{where}:{header_line or line}: {problem}"))
                continue
            if _empty(raw, is_json, spec):
                continue
            if target is None:
                row.id = str(raw).strip()
                continue
            try:
                row.values[target] = _typed(spec, raw)
            except ValueError as e:
                row.bad = True
                problems.append((line, f"{where}:{line}: {target}: {e}"))
    if not rows:
        problems.append((0, f"{where}: the table has no rows"))
    return Table(rows, problems)


def _empty(raw: Any, is_json: bool, spec) -> bool:
    """An empty cell keeps the workflow's value; JSONL's "" still sets an empty text (CSV cannot
    tell an empty text from a cell left empty)."""
    if raw is None:
        return True
    return isinstance(raw, str) and not raw and not (is_json and spec is not None and spec.type.name == "STRING")


class _Columns:
    """Header → (target "node.input", or None for id; its declaration; a problem), resolved once."""

    def __init__(self, graph, registry):
        self.graph, self.registry = graph, registry
        self.known: dict[str, tuple[str | None, Any, str]] = {}
        self.by_target: dict[str, str] = {}
        self.reported: set[str] = set()

    def resolve(self, header: str) -> tuple[str | None, Any, str]:
        if header not in self.known:
            self.known[header] = self._resolve(header)
        return self.known[header]

    def _resolve(self, header: str) -> tuple[str | None, Any, str]:
        try:
            target = _column(header, self.graph, self.registry)
        except UsageError as e:
            return None, None, f"column {header!r}: {e}"
        if target is None:
            return None, None, ""
        if target in self.by_target:
            return None, None, f"columns {self.by_target[target]!r} and {header!r} both set {target}; keep one"
        self.by_target[target] = header
        node_id, _, name = target.rpartition(".")
        return target, self.registry.get(self.graph.nodes[node_id].type).input(name), ""


def _jsonl_rows(text: str) -> list[tuple[int, dict, str]]:
    """(line, cells, what is wrong with the line or "") for each non-blank line."""
    rows = []
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            rows.append((line, {}, f"not valid JSON (column {e.colno}: {e.msg})"))
            continue
        if isinstance(data, dict):
            rows.append((line, data, ""))
        else:
            rows.append((line, {}, f"expected an object of column → value, found {type(data).__name__}"))
    return rows


def _csv_rows(text: str, delimiter: str) -> tuple[int, list[tuple[int, dict, str]]]:
    """(the header's line, [(line, cells, what is wrong with the row or "")])."""
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    header: list[str] | None = None
    header_line, start = 0, 1
    rows = []
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1  # a quoted cell may span lines: report where the row starts
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header, header_line = [c.strip() for c in cells], line
                dupes = sorted({h for h in header if header.count(h) > 1})
                if dupes or "" in header:
                    what = f"column {dupes[0]!r} appears twice" if dupes else "a column has no name"
                    raise TableError([f"{line}: {what} in the header"])
            elif len(cells) > len(header):
                rows.append((line, {}, f"{len(cells)} cells but the header names {len(header)} columns"))
            else:
                rows.append((line, dict(zip(header, cells, strict=False)), ""))
    except csv.Error as e:
        raise TableError([f"{start}: not valid CSV ({e})"]) from None
    return header_line, rows


def _column(header: str, graph, registry) -> str | None:
    """"node.input" for a column header (None for `id`); UsageError saying what would fit."""
    if header == ID_COLUMN:
        return None
    node_id, dot, name = header.rpartition(".")
    if dot:
        value_input(graph, registry, node_id, name)
        if name in graph.nodes[node_id].links:
            src = graph.nodes[node_id].links[name][0]
            raise UsageError(f"input {name!r} of node {node_id} is linked to node {src}, so a value there is "
                             "not used; set it on the node that feeds it")
        return header
    found, names = [], set()
    for node in sorted(graph.nodes.values(), key=lambda n: id_order(n.id)):
        cls = registry.get(node.type)
        for spec in cls.inputs if cls else ():
            if spec.type.widget and spec.name not in node.links:
                names.add(spec.name)
                if spec.name == header:
                    found.append(f"{node.id}.{header}")
    if len(found) == 1:
        return found[0]
    if found:
        raise UsageError(f"{len(found)} inputs are called {header!r} ({', '.join(found)}); "
                         "name one as NODE_ID.INPUT")
    close = difflib.get_close_matches(header, sorted(names), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "use NODE_ID.INPUT, or `id` to name the outputs"
    raise UsageError(f"no node has a value input {header!r} — {hint}")


def _typed(spec, raw: Any) -> Any:
    """A cell in the input's type: text by the --set rule, JSON values as they are if they fit."""
    if isinstance(raw, str):
        try:
            return parse_value(spec, raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid {spec.type.name}") from None
    ok, value = spec.coerce(raw)
    if not ok:
        raise ValueError(f"{json.dumps(raw)} is not a valid {spec.type.name}")
    return value
