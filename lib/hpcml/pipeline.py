"""Discover and execute the numbered notebooks with papermill, then render the site.

Usage::

    python -m hpcml.pipeline                       # every notebook, CI-sized profile
    python -m hpcml.pipeline -f params/full.yaml    # full-size parameters
    python -m hpcml.pipeline --only 00 02_horovod_training -p 02_horovod_training.epochs=5
    python -m hpcml.pipeline --list

Executed copies go to ``build/executed/``; the HTML walkthrough to ``build/site/``.
The run stops at the first failing notebook, prints the failing cell's source and
error and the path of the partially executed copy, and exits non-zero.

The console shows the progress and the errors only: each kernel starts with its own log at
CRITICAL (:data:`KERNEL_ARGUMENTS`: no warning that it talks to papermill over TCP on
loopback without encryption, no interrupt message at shutdown), and a Spark driver started inside a notebook reads
:data:`SPARK_LOG4J2` (no start-up banner or WARN lines, errors still shown).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcml import paths
from hpcml.params import (
    ParameterError,
    check_values,
    load_profile,
    parameters_source,
    parse_override,
    parse_parameters_cell,
    values_for,
)

KERNEL_NAME = "hpcml"
_NB_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")
#: Extra command-line arguments of every kernel: its own log (the kernel's machinery, not the
#: notebook's code) shows critical messages only. Otherwise it warns at every start that it
#: runs over TCP without encryption (papermill starts it on loopback; nothing a user sets
#: changes that), and at the end it may log "KeyboardInterrupt caught in kernel" at ERROR
#: (jupyter_client interrupts every kernel before shutting it down). A failing cell is not
#: in this log: the pipeline prints its source and error, and a kernel that dies fails the run.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]
#: log4j2 configuration of a Spark driver started by a notebook under the pipeline: Spark's
#: own console layout at level ERROR. ``PythonGatewayServer`` (the logger pyspark's driver
#: starts logging with) at ERROR too, or Spark prints "Setting default log level" at start.
SPARK_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


class PipelineError(RuntimeError):
    """A notebook failed, or the run was asked for something that does not exist."""


@dataclass
class NotebookRun:
    """The outcome of one notebook in a pipeline run."""

    name: str
    source: str
    executed: str
    status: str = "pending"  # pending | ok | failed | skipped
    duration_s: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


def discover(nb_dir: Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_topic.ipynb`` in order."""
    nb_dir = nb_dir or paths.notebooks_dir()
    return sorted(p for p in nb_dir.glob("*.ipynb") if _NB_RE.match(p.name))


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Pick notebooks by number (``02``), stem (``02_horovod_training``) or file name."""
    if not only:
        return notebooks
    chosen: list[Path] = []
    for key in only:
        key = key.removesuffix(".ipynb")
        hits = [p for p in notebooks if p.stem == key or p.stem.split("_", 1)[0] == key]
        if not hits:
            names = ", ".join(p.stem for p in notebooks) or "none"
            raise PipelineError(f"unknown notebook {key!r} (available: {names})")
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen)


def declared_parameters(nb_path: Path):
    """The parameters declared in the notebook's cell tagged ``parameters``."""
    source = parameters_source(nb_path)
    if source is None:
        raise PipelineError(f"{nb_path.name} has no code cell tagged 'parameters'")
    return parse_parameters_cell(source)


def spark_submit_opts(current: str | None, log4j2_file: Path) -> str:
    """``SPARK_SUBMIT_OPTS`` that point the driver JVM at ``log4j2_file``, unless ``current``
    already names a log4j2 configuration (the user's choice wins)."""
    current = (current or "").strip()
    if "log4j2.configurationFile" in current:
        return current
    return f"{current} -Dlog4j2.configurationFile=file:{log4j2_file}".strip()


@contextmanager
def quiet_spark_start() -> Iterator[Path]:
    """While the notebooks run, a Spark driver they start logs with :data:`SPARK_LOG4J2`.

    Kernels inherit this process's environment, and ``spark-submit`` (which pyspark runs to
    start the driver JVM) passes ``SPARK_SUBMIT_OPTS`` to it. Restored on exit.

    Yields:
        The log4j2 properties file written under ``build/pipeline/``.
    """
    conf = paths.atomic_write_text(paths.ensure(paths.build_dir() / "pipeline") / "log4j2.properties",
                                   SPARK_LOG4J2)
    old = os.environ.get("SPARK_SUBMIT_OPTS")
    os.environ["SPARK_SUBMIT_OPTS"] = spark_submit_opts(old, conf)
    try:
        yield conf
    finally:
        if old is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = old


def _failure_details(exc: Exception, executed: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"ename": type(exc).__name__, "evalue": str(exc)[:2000]}
    for attr in ("cell_index", "exec_count", "source", "ename", "evalue"):
        if hasattr(exc, attr):
            info[attr] = getattr(exc, attr)
    # papermill's error has the source; fall back to reading the executed copy.
    if "source" not in info and executed.exists():
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    info.update(cell_index=i, source=cell.source, ename=out.ename, evalue=out.evalue)
    return info


def run_one(nb_path: Path, parameters: dict[str, Any], out_dir: Path, log=print) -> NotebookRun:
    """Execute one notebook with papermill into ``out_dir``; never raises for a cell error."""
    import papermill as pm

    executed = paths.ensure(out_dir) / nb_path.name
    run = NotebookRun(nb_path.stem, str(nb_path), str(executed), parameters=parameters)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb_path),
            str(executed),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            extra_arguments=KERNEL_ARGUMENTS,
            cwd=str(nb_path.parent),
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
        )
        run.status = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, then the pipeline stops
        run.status = "failed"
        run.error = _failure_details(exc, executed)
    run.duration_s = round(time.perf_counter() - t0, 2)
    return run


def _print_failure(run: NotebookRun, log) -> None:
    err = run.error or {}
    log(f"\nFAILED: {run.name} (cell {err.get('cell_index', '?')})")
    if err.get("source"):
        log("---- failing cell ----")
        log(err["source"])
    log("---- error ----")
    log(f"{err.get('ename', '')}: {err.get('evalue', '')}".strip())
    log(f"partially executed copy: {run.executed}")


def run_pipeline(
    only: list[str] | None = None,
    profile: str | Path | None = None,
    overrides: list[str] | None = None,
    render: bool = True,
    nb_dir: Path | None = None,
    log=print,
    keep_cluster: bool = False,
    keep_store: bool = False,
) -> list[NotebookRun]:
    """Run the selected notebooks in order; stop at the first failure; render the site.

    Args:
        only: notebook numbers or stems; ``None`` runs all.
        profile: parameters YAML; defaults to ``params/ci.yaml``.
        overrides: ``[notebook.]name=value`` strings applied last.
        render: render HTML and the index into ``build/site``.
        nb_dir: folder of notebooks (tests use a temporary one).
        keep_cluster: leave the multi-node cluster up at the end. The runner owns the cluster
            that its notebooks brought up (00 starts it, the later ones reuse it) and takes it
            down when the run ends, failed or not, unless this is set.
        keep_store: leave the object store (SeaweedFS under ``build/objectstore``) running at the
            end. 01, 02, 03 and 04 start it or reuse it and never stop it (a stop takes ~15 s); the
            runner stops it when the run ends, failed or not, unless this is set.

    Returns:
        One :class:`NotebookRun` per selected notebook.
    """
    notebooks = select(discover(nb_dir), only)
    if not notebooks:
        raise PipelineError(f"no notebooks NN_*.ipynb found in {nb_dir or paths.notebooks_dir()}")
    prof_path = Path(profile) if profile else paths.repo_root() / "params" / "ci.yaml"
    prof = load_profile(prof_path)
    for key in (overrides or []):
        nb, name, val = parse_override(key)
        section = "common" if nb is None else next(
            (p.stem for p in notebooks if nb in (p.stem, p.stem[:2])), nb
        )
        prof.setdefault(section, {})[name] = val
    # Validate every notebook's parameters before running anything.
    plan: list[tuple[Path, dict[str, Any]]] = []
    for nb in notebooks:
        declared = declared_parameters(nb)
        plan.append((nb, values_for(nb.stem, prof, declared)))
    unknown = set(prof) - {"common"} - {p.stem for p in discover(nb_dir)}
    if unknown:
        raise ParameterError(f"parameters file {prof_path} names unknown notebook(s): {', '.join(sorted(unknown))}")

    runs = [NotebookRun(nb.stem, str(nb), str(paths.executed_dir() / nb.name), parameters=v) for nb, v in plan]
    total = len(plan)
    try:
        with quiet_spark_start():
            for i, (nb, values) in enumerate(plan):
                log(f"[{i + 1}/{total}] {nb.stem} ... ", end="") if log is print else log(f"[{i + 1}/{total}] {nb.stem}")
                sys.stdout.flush()
                runs[i] = run_one(nb, values, paths.executed_dir(), log=log)
                log(f"{runs[i].status} in {runs[i].duration_s:.1f}s")
                if runs[i].status == "failed":
                    _print_failure(runs[i], log)
                    for r in runs[i + 1 :]:
                        r.status = "skipped"
                    break
    finally:
        if not keep_cluster:
            _cluster_down(log)
        if not keep_store:
            _store_down(log)
    _write_summary(runs, prof_path)
    if render:
        from hpcml import site

        index = site.render_site(runs)
        log(f"site: {index}")
    return runs


def _cluster_down(log) -> None:
    """Take down the multi-node cluster whose state lives in this build tree, if one is up."""
    from hpcml.cluster import local

    state = local.default_state_dir()
    if (state / "cluster.json").exists():
        removed = local.down(state)
        log(f"cluster down: {len(removed['netns'])} namespace(s), {len(removed['links'])} link(s) removed")


def _store_down(log) -> None:
    """Stop the object store whose data lives in this build tree, if one is running (by pid)."""
    from hpcml.aws.local_s3 import ObjectStore, default_dir

    store = ObjectStore.attach(default_dir())
    if store is not None:
        t0 = time.monotonic()
        store.stop()
        log(f"object store down: pid {store.pid} stopped in {time.monotonic() - t0:.1f}s")


def _write_summary(runs: list[NotebookRun], profile: Path) -> None:
    summary = {
        "profile": str(profile),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "notebooks": [asdict(r) for r in runs],
    }
    paths.atomic_write_text(paths.build_dir() / "pipeline.json", json.dumps(summary, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NB", help="notebook numbers or names, e.g. 00 02_horovod_training")
    ap.add_argument("-f", "--parameters-file", default=None, help="parameters YAML (default params/ci.yaml)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="[NB.]NAME=VALUE",
                    help="override one parameter; VALUE is parsed as YAML")
    ap.add_argument("--no-render", action="store_true", help="skip the HTML site")
    ap.add_argument("--render-only", action="store_true", help="re-render the site from build/executed")
    ap.add_argument("--site-dir", type=Path, default=None,
                    help="with --render-only: write the site here (relative links only, ready for any static host)")
    ap.add_argument("--keep-store", action="store_true",
                    help="leave the object store running at the end (stop it later with "
                         "`python -m hpcml.aws.local_s3 stop`)")
    ap.add_argument("--keep-cluster", action="store_true",
                    help="leave the multi-node cluster up at the end (take it down later with "
                         "`python -m hpcml.cluster.local down`)")
    ap.add_argument("--list", action="store_true", help="list notebooks and their parameters, then exit")
    ap.add_argument("--notebooks-dir", type=Path, default=None, help="folder of NN_*.ipynb (default notebooks/)")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for nb in discover(args.notebooks_dir):
                print(nb.stem)
                for p in declared_parameters(nb):
                    print(f"    {p.name}: {p.type_name or '?'} = {p.default}  # {p.comment}")
            return 0
        if args.render_only:
            from hpcml import site

            print(f"site: {site.render_site(None, args.site_dir)}")
            return 0
        runs = run_pipeline(args.only, args.parameters_file, args.param, render=not args.no_render,
                            nb_dir=args.notebooks_dir, keep_cluster=args.keep_cluster,
                            keep_store=args.keep_store)
    except (PipelineError, ParameterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in runs if r.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
