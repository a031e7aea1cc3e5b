"""From table rows to jobs: crossed with --seeds, validated all at once, keyed, named and ordered.

A job's key is a hash of the workflow as that job runs it (every node's type, values and links, with
the row's values applied) — so the same row in an edited table keeps its key, and any change to
the workflow's values changes every key. Layout (node positions, titles) is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nodegraph import validate
from nodegraph.files import unsafe_name
from nodegraph.graph import id_order

from .table import Row, Table, TableError
from .worker import apply_values

SEED_INPUTS = ("seed", "noise_seed")
NAME_FIELDS = ("row", "seed", "id", "key")
MAX_SEEDS = 1_000_000


@dataclass(eq=False)
class Job:
    row: int
    line: int
    id: str | None
    seed: int | None
    values: dict[str, Any]  # "7.seed" → 42: the row's values, then the seed
    key: str = ""
    name: str = ""
    model: str = ""  # the model files it loads: rows sharing them go to the same worker
    attempts: int = 0
    avoid: set[str] = field(default_factory=set)  # workers that died running it

    def message(self) -> dict[str, Any]:
        """What a worker needs to run it (sent to Ray actors: plain data only)."""
        return {"row": self.row, "key": self.key, "values": self.values}


def parse_seeds(text: str) -> list[int]:
    """"0-3,7" → [0, 1, 2, 3, 7]; ValueError saying what is wrong."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"--seeds {text!r}: {part!r} is not a seed or a range like 0-9")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise ValueError(f"--seeds {text!r}: {part!r} counts down; write {last}-{first}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise ValueError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError(f"--seeds {text!r}: no seeds given; e.g. --seeds 0-3")
    return seeds


def seed_inputs(graph, registry) -> list[str]:
    """Every seed value in the workflow ("7.seed"), in node order: --seeds sets them all."""
    found = []
    for node in sorted(graph.nodes.values(), key=lambda n: id_order(n.id)):
        cls = registry.get(node.type)
        for name in SEED_INPUTS:
            spec = cls.input(name) if cls else None
            if spec is not None and spec.type.widget and name not in node.links:
                found.append(f"{node.id}.{name}")
    return found


def make_jobs(graph, registry, env, table: Table, *, seeds: list[int] | None = None,
              name: str | None = None, where: str = "table", workflow: str = "workflow") -> list[Job]:
    """Validated, keyed, named jobs in run order; TableError listing every problem, by line."""
    rows, seeded = table.rows, seed_inputs(graph, registry)
    if seeds is not None and not seeded:
        raise TableError(["--seeds: the workflow has no seed input (an input called seed or noise_seed)"])
    taken = [c for c in seeded if any(c in r.values for r in rows)]
    if seeds is not None and taken:
        raise TableError([f"--seeds and the table's column {taken[0]} both set the seed; drop one"])
    template = name or default_name(rows, bool(seeded), seeds is not None)
    if problem := _check_template(template, bool(seeded)):
        raise TableError([problem])
    jobs = []
    for row in rows:
        if row.bad:  # its problems are in the table's list already
            continue
        for seed in seeds if seeds is not None else [None]:
            jobs.append(Job(row.number, row.line, row.id, seed, {**row.values, **dict.fromkeys(seeded, seed)}
                            if seed is not None else dict(row.values)))
    failures: dict[str, tuple[str, list[Job]]] = {}  # problem → (the input it is about, the jobs that have it)
    for job in jobs:
        effective = apply_values(graph, job.values)
        for p in validate(effective, registry, env):
            if not getattr(p, "warning", False):  # a warning is in a node no output needs: it does not run
                failures.setdefault(describe(p), (f"{p.node_id}.{p.input}", []))[1].append(job)
        if seeded:  # the seed it runs with, for its name: the row's own, --seeds', or the workflow's
            node_id, _, input_name = seeded[0].rpartition(".")
            job.seed = effective.nodes[node_id].values.get(input_name)
        job.key = job_key(effective)
        job.model = model_key(effective, registry)
    problems = table.problems + _problem_lines(failures, jobs, where, workflow)
    problems += _name_jobs(jobs, template, where)
    if problems:
        raise TableError([text for _line, text in sorted(problems, key=lambda p: p[0])])
    return order_jobs(jobs, graph)


def default_name(rows: list[Row], seeded: bool, crossed: bool) -> str:
    """`{id}` when the table names its rows, else `{row:05d}_{seed}`."""
    if any(r.id for r in rows):
        return "{id}_{seed}" if crossed else "{id}"
    return "{row:05d}_{seed}" if seeded else "{row:05d}"


def _check_template(template: str, seeded: bool) -> str:
    try:
        fields = {f for _text, f, _spec, _conv in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        return f"--name {template!r}: {e}"
    unknown = sorted(f for f in fields if f not in NAME_FIELDS)
    if unknown:
        return f"--name {template!r}: unknown field {{{unknown[0]}}}; use {{row}}, {{seed}}, {{id}} or {{key}}"
    if "seed" in fields and not seeded:
        return f"--name {template!r}: the workflow has no seed input; leave {{seed}} out"
    return ""


def _name_jobs(jobs: list[Job], template: str, where: str) -> list[tuple[int, str]]:
    problems, owner = [], {}
    for job in jobs:
        at = f"{where}:{job.line}"
        if "{id" in template and not job.id:
            problems.append((job.line, f"{at}: the row has no id, and --name {template!r} needs one: give every "
                             "row an id"))
            continue
        try:
            job.name = template.format(row=job.row, seed=job.seed, id=job.id, key=job.key[:12])
        except (ValueError, TypeError) as e:
            problems.append((job.line, f"{at}: --name {template!r}: {e}"))
            continue
        why = unsafe_name(job.name) or ("has a part starting with '.'" if any(
            p.startswith(".") or not p for p in job.name.split("/")) else None)
        if why:
            problems.append((job.line, f"{at}: output name {job.name!r} {why}; use plain names (a/b makes a "
                             "sub-folder)"))
        elif job.name in owner:
            first = owner[job.name]
            problems.append((job.line, f"{at}: output name {job.name!r} is also row {first.row}'s "
                             f"({where}:{first.line}); give rows distinct ids, or put {{row}} or {{seed}} in --name"))
        else:
            owner[job.name] = job
    return problems


def describe(problem) -> str:
    """A validation problem as `7.steps: 0 is below the minimum 1 — set it to 1 or more`."""
    m = re.fullmatch(r'input "([^"]+)" (?:= )?(.*)', problem.message)
    if problem.node_id is not None and problem.input and m and m.group(1) == problem.input:
        text = f"{problem.node_id}.{problem.input}: {m.group(2)}"
    else:
        text = str(problem).removesuffix(f" — {problem.fix}")
    return text + (f" — {problem.fix}" if problem.fix else "")


def _problem_lines(failures: dict[str, tuple[str, list[Job]]], jobs: list[Job], where: str,
                   workflow: str) -> list[tuple[int, str]]:
    """One line per problem and row (with the seed where only some of the row's seeds have it); a
    problem that every job has, in an input no row sets, is the workflow's: said once."""
    jobs_per_row = Counter(j.row for j in jobs)
    lines: list[tuple[int, str]] = []
    for text, (target, failed) in failures.items():
        if len(failed) == len(jobs) > 1 and not any(target in j.values for j in jobs):
            lines.append((0, f"{workflow}: {text}"))
            continue
        by_row: dict[int, list[Job]] = {}
        for job in failed:
            by_row.setdefault(job.row, []).append(job)
        for row, row_jobs in by_row.items():
            line = row_jobs[0].line
            if len(row_jobs) == jobs_per_row[row]:
                lines.append((line, f"{where}:{line}: {text}"))
            else:
                lines += [(line, f"{where}:{line} (seed {j.seed}): {text}") for j in row_jobs]
    return lines


def job_key(graph) -> str:
    """A hash of what the job runs: each node's type, values and links (not its layout)."""
    nodes = {n.id: [n.type, n.values, sorted(n.links.items())] for n in graph.nodes.values()}
    blob = json.dumps(nodes, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def model_key(graph, registry) -> str:
    """The model files a job loads (checkpoints, VAEs…: file inputs other than input images)."""
    files = []
    for node in graph.nodes.values():
        cls = registry.get(node.type)
        for spec in cls.inputs if cls else ():
            if spec.files not in (None, "input") and spec.name not in node.links:
                files.append([spec.files, node.values.get(spec.name)])
    return json.dumps(sorted(files, key=str))


def order_jobs(jobs: list[Job], graph) -> list[Job]:
    """Rows that share upstream values (checkpoint, then prompt, …) made neighbours, so each runs
    while the executor still holds what they share; otherwise the table's order is kept."""
    try:
        order = list(nx.topological_sort(graph.to_networkx()))
    except nx.NetworkXUnfeasible:
        order = sorted(graph.nodes, key=id_order)
    targets = {t for job in jobs for t in job.values}
    nodes = [n for n in order if any(t.rpartition(".")[0] == n for t in targets)]
    first_seen: dict[tuple[str, str], int] = {}

    def rank(job: Job) -> tuple[int, ...]:
        ranks = []
        for node_id in nodes:
            mine = json.dumps({t: v for t, v in job.values.items() if t.rpartition(".")[0] == node_id},
                              sort_keys=True, default=repr)
            ranks.append(first_seen.setdefault((node_id, mine), len(first_seen)))
        return tuple(ranks)

    ranked = [(rank(job), i, job) for i, job in enumerate(jobs)]
    return [job for _rank, _i, job in sorted(ranked, key=lambda x: (x[0], x[1]))]
