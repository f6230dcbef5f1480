"""The layer contract: every module of ``hpcml`` sits in one layer, and imports point down.

Layers, lowest first::

    spec      typed specs and the constants every stage shares (paths, the AWS placeholders)
    pure      pure builders and logic: manifests, Slurm config, AWS request bodies, rules,
              models, statistics, cost maths -- no processes, sockets, Spark, boto3 or kubernetes
    backend   starts processes and talks to services: launch targets, daemons, servers,
              Spark jobs, Prometheus, kube apply, sending AWS requests
    app       entry points and presentation over everything: the pipeline runner, the site,
              the review, the self-check, command lines

A module imports only from its own layer or below; ``spec`` and ``pure`` modules import
none of :data:`FORBIDDEN` (not even inside a function); and the import graph has no cycle.
Every import counts, module level or inside a function, except under ``if TYPE_CHECKING:``.

``python -m hpcml.layers`` prints every breach and exits 1 (``tests/test_layers.py`` runs it).
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from dataclasses import dataclass
from pathlib import Path

ORDER = ("spec", "pure", "backend", "app")
#: Imports a ``spec`` or ``pure`` module may not make: each starts processes, opens sockets or
#: talks to a service.
FORBIDDEN = ("subprocess", "socket", "pyspark", "boto3", "kubernetes")

#: (pattern, layer): the first pattern that matches a module's dotted name decides its layer.
LAYERS: tuple[tuple[str, str], ...] = (
    # -- spec: typed specs and shared constants
    ("hpcml", "spec"),
    ("hpcml.paths", "spec"),
    ("hpcml.specbase", "spec"),
    ("hpcml.aws.account", "spec"),
    ("hpcml.*.spec", "spec"),
    ("hpcml.tune.space", "spec"),
    # -- pure builders and logic
    ("hpcml.k8s.*", "pure"),
    ("hpcml.aws.requests", "pure"),
    ("hpcml.aws.identities", "pure"),
    ("hpcml.aws.s3errors", "pure"),
    ("hpcml.cluster.slurm.conf", "pure"),
    ("hpcml.cluster.fabric", "pure"),
    ("hpcml.cluster.slurm.jobs", "pure"),
    ("hpcml.cluster.pbs", "pure"),
    ("hpcml.train.targets.layout", "pure"),
    ("hpcml.train.models", "pure"),
    ("hpcml.train.loop", "pure"),
    ("hpcml.train.abtest", "pure"),
    ("hpcml.train.stats", "pure"),
    ("hpcml.train.allreduce_stats", "pure"),
    ("hpcml.train.plots", "pure"),
    ("hpcml.train.scaling", "pure"),
    ("hpcml.train.sweep_summary", "pure"),
    ("hpcml.serve.protocol", "pure"),
    ("hpcml.serve.batching", "pure"),
    ("hpcml.serve.capacity", "pure"),
    ("hpcml.serve.plots", "pure"),
    ("hpcml.monitor.rules", "pure"),
    ("hpcml.monitor.alerting", "pure"),
    ("hpcml.monitor.dashboard", "pure"),
    ("hpcml.monitor.shipping", "pure"),
    ("hpcml.monitor.syslog_conf", "pure"),
    ("hpcml.monitor.plots", "pure"),
    ("hpcml.monitor.signals", "pure"),
    ("hpcml.cost.models", "pure"),
    ("hpcml.cost.prices", "pure"),
    ("hpcml.cost.plots", "pure"),
    ("hpcml.cost.measured", "pure"),
    ("hpcml.cost.interconnect", "pure"),
    ("hpcml.data.raw", "pure"),
    ("hpcml.data.spark_conf", "pure"),
    ("hpcml.data.staging", "pure"),
    ("hpcml.report", "pure"),
    ("hpcml.claims", "pure"),
    ("hpcml.params", "pure"),
    ("hpcml.config", "pure"),  # re-exports specs, and Thresholds/Workload from pure modules (lazily)
    ("hpcml.layers", "pure"),
    # -- app: entry points and presentation
    ("hpcml.pipeline", "app"),
    ("hpcml.site", "app"),
    ("hpcml.sitecheck", "app"),
    ("hpcml.selfcheck", "app"),
    ("hpcml.review", "app"),
    ("hpcml.diagrams", "app"),
    ("hpcml.data.cli", "app"),
    # -- backends: everything else that is listed by package
    ("hpcml.proc", "backend"),
    ("hpcml.aws.*", "backend"),
    ("hpcml.cluster.*", "backend"),
    ("hpcml.data.*", "backend"),
    ("hpcml.train.*", "backend"),
    ("hpcml.tune.*", "backend"),
    ("hpcml.serve.*", "backend"),
    ("hpcml.monitor.*", "backend"),
    ("hpcml.cost.*", "backend"),
)
#: Packages whose ``__init__`` is a docstring only: they sit in ``spec`` whatever their children are.
PACKAGE_LAYER = "spec"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def discover(root: Path) -> dict[str, Module]:
    """Every module under the package folder ``root`` (``.../lib/hpcml``), by dotted name."""
    out: dict[str, Module] = {}
    top = root.name
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        if parts[0] != top:
            continue
        out[".".join(parts)] = Module(".".join(parts), p, is_pkg)
    return out


def layer_of(name: str, is_package: bool = False) -> str | None:
    """The layer a module is assigned to, or ``None`` when no pattern matches it."""
    for pattern, layer in LAYERS:
        if fnmatch.fnmatchcase(name, pattern):
            return layer
    return PACKAGE_LAYER if is_package else None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                skip.add(id(sub))
    return skip


def imports(mod: Module, modules: dict[str, Module]) -> tuple[set[str], set[str]]:
    """``(internal, external)``: the ``hpcml`` modules and the top-level external packages ``mod`` imports."""
    tree = ast.parse(mod.path.read_text(), str(mod.path))
    skip = _type_checking_nodes(tree)
    internal: set[str] = set()
    external: set[str] = set()
    pkg = mod.name if mod.is_package else mod.name.rpartition(".")[0]

    def add(target: str) -> None:
        if target.split(".")[0] != "hpcml":
            external.add(target.split(".")[0])
            return
        while target and target not in modules:  # `hpcml.x.name` where name is an attribute
            target = target.rpartition(".")[0]
        if target and target != mod.name:
            internal.add(target)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                full = f"{prefix}.{a.name}"
                add(full if full in modules else prefix)
    return internal, external


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: Path | None = None) -> list[str]:
    """Every breach of the contract under ``root`` (default: this package), one line each."""
    root = Path(root) if root else Path(__file__).resolve().parent
    modules = discover(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for name, mod in modules.items():
        layer = layer_of(name, mod.is_package)
        internal, external = imports(mod, modules)
        graph[name] = internal
        if layer is None:
            problems.append(f"{name}: no layer (add a pattern to hpcml.layers.LAYERS)")
            continue
        rank = ORDER.index(layer)
        for dep in sorted(internal):
            dep_layer = layer_of(dep, modules[dep].is_package)
            if dep_layer is not None and ORDER.index(dep_layer) > rank:
                problems.append(f"{name} ({layer}) imports {dep} ({dep_layer}): a layer may only import its own or lower")
        if layer in ("spec", "pure"):
            for ext in sorted(external & set(FORBIDDEN)):
                problems.append(f"{name} ({layer}) imports {ext}: {layer} modules start no processes and talk to no service")
    for comp in _cycles(graph):
        problems.append(f"import cycle: {' -> '.join(comp)}")
    return problems


def table(root: Path | None = None) -> list[tuple[str, str | None]]:
    """``(module, layer)`` for every module, sorted by name."""
    root = Path(root) if root else Path(__file__).resolve().parent
    return [(n, layer_of(n, m.is_package)) for n, m in sorted(discover(root).items())]


def main(argv: list[str] | None = None) -> int:
    problems = check()
    for p in problems:
        print(p)
    if not problems:
        print(f"layer contract holds: {len(table())} modules, no upward import, no cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
