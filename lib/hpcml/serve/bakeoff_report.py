"""Notebook 04's record of the bake-off (:func:`hpcml.serve.bakeoff.run`): metrics, sentences, tables, curves.

Every number goes through :mod:`hpcml.report`: per model the throughput target (project over
the best peer at the highest load where that peer's p99 is at most 50 ms, with its 95 % low
bound), the throughput and p99 of every server at the highest load, the batching gain of the
two servers that batch; the conformance differences, and the peers that could not run.
"""

from __future__ import annotations

from typing import Any

from hpcml import report
from hpcml.serve import bakeoff, conformance


def _at_max(st: dict, key: str) -> dict[str, float]:
    return {srv: per[max(per, key=int)][key] for srv, per in st.items()}


def record(res: dict) -> None:
    """Record the bake-off's metrics (names ``bakeoff_*`` per model, ``conformance_*``)."""
    report.record("bakeoff_peers_unavailable", {p: u["line"] for p, u in res["unavailable"].items()},
                  description="peers that could not be installed or did not start, with why")
    clients = max(res["settings"]["concurrencies"])
    for m, r in res["models"].items():
        st, t = r["stats"], r["target"]
        rps, p99 = _at_max(st, "rps"), _at_max(st, "p99_ms")
        report.record(f"bakeoff_rps_{m}", rps, unit="req/s", description=f"{m}: throughput at {clients} clients, each server")
        report.record(f"bakeoff_p99_ms_{m}", p99, unit="ms", description=f"{m}: p99 at {clients} clients, each server")
        for kind in ("hpcml", "triton"):
            off = "hpcml size 1" if kind == "hpcml" else "triton no batcher"
            if kind in rps and off in rps:
                report.record(f"bakeoff_batching_gain_{kind}_{m}", rps[kind] / rps[off], unit="x",
                              description=f"{m}: {kind} with its batcher / without, at {clients} clients")
        if t["peer"] is not None:
            report.record(f"bakeoff_ratio_{m}", t["ratio"], unit="x", headline=m == "cnn",
                          description=f"{m}: hpcml / {t['peer']} throughput at {t['clients']} clients, the highest "
                                      f"load where {t['peer']}'s p99 <= {bakeoff.P99_OBJECTIVE_MS:g} ms")
            report.record(f"bakeoff_ratio_{m}_low95", t["ratio_low95"], unit="x",
                          description="95 % lower bound over the interleaved rounds (Student t)")
            report.record(f"bakeoff_peer_{m}", t["peer"], description="the best peer at its highest load within p99")
            report.record(f"bakeoff_clients_{m}", t["clients"], description="that load (closed-loop clients)")
    conf = res["conformance"] or {"rows": {}, "differences": []}
    servers = list(conf["rows"])
    report.record("conformance_differences", len(conf["differences"]), description=f"v2 cases where {servers} differ")
    report.record("conformance_client_visible", len(conformance.client_visible(conf["differences"], servers)),
                  description="error cases some server did not refuse with a 4xx")
    report.record("conformance_project_all_expected", all(r["ok"] for r in conf["rows"].get("hpcml", [])) and
                  bool(conf["rows"].get("hpcml")), description="the project's server answered every case as expected")


def say(res: dict):
    """One sentence per model on the target (decided by ``report.conclude``), then the peers that could not run."""
    lines, values = [], {}
    for m, r in res["models"].items():
        t = r["target"]
        if t["peer"] is None:
            lines.append(f"- **{m}**: no peer kept p99 ≤ {bakeoff.P99_OBJECTIVE_MS:g} ms at any load level, so the "
                         "target has no load to be taken at.")
            continue
        word = report.conclude(f"bakeoff_target_met_{m}", f"bakeoff_ratio_{m}_low95 >= 1.0", "met", "not met")
        values.update({f"pr_{m}": t["project_rps"], f"pe_{m}": t["peer_rps"], f"pp_{m}": t["peer_p99_ms"],
                       f"hp_{m}": t["project_p99_ms"]})
        lines.append(f"- **{m}**: at {{bakeoff_clients_{m}}} clients, the highest load where {t['peer']}'s p99 stayed "
                     f"within {bakeoff.P99_OBJECTIVE_MS:g} ms ({{pp_{m}:.1f}} ms), the project's server answered "
                     f"{{pr_{m}:,.0f}} req/s (p99 {{hp_{m}:.1f}} ms) and {t['peer']} {{pe_{m}:,.0f}} req/s: a ratio of "
                     f"{{bakeoff_ratio_{m}:.2f}}, 95 % lower bound {{bakeoff_ratio_{m}_low95:.2f}} over "
                     f"{res['settings']['rounds']} interleaved rounds; the target (≥ 1.0 at the lower bound) is **{word}**.")
    for peer, u in res["unavailable"].items():
        lines.append(f"- {peer} did not run: {u['line'].replace('{', '{{').replace('}', '}}')}")
    return report.say("\n".join(lines), **values)


def table(res: dict) -> list[dict[str, Any]]:
    """Rows ``model, server, clients, rps, p50_ms, p99_ms, errors`` (every load level)."""
    return [{"model": m, "server": srv, "clients": int(c), **v} for m, r in res["models"].items()
            for srv, per in r["stats"].items() for c, v in sorted(per.items(), key=lambda kv: int(kv[0]))]


def conformance_table(res: dict) -> list[dict[str, Any]]:
    """Every conformance case with each server's status and detail (one row per case)."""
    rows = (res["conformance"] or {}).get("rows", {})
    if not rows:
        return []
    first = next(iter(rows.values()))
    return [{"case": c["case"], "expect": c["expect"],
             **{k: v[i]["status"] for k, v in rows.items()}, **{f"{k} detail": v[i]["detail"] for k, v in rows.items()}}
            for i, c in enumerate(first)]


def figures(res: dict) -> None:
    """The curves of every model (:func:`hpcml.serve.plots.bakeoff_curves`), saved with ``report.figure``."""
    import matplotlib.pyplot as plt

    from hpcml.serve import plots

    for m, r in res["models"].items():
        fig = plots.bakeoff_curves(r["stats"], f"{m}: the project's server, Triton and KServe under the same load",
                                   bakeoff.P99_OBJECTIVE_MS)
        report.figure(fig, f"bakeoff_{m}", caption=f"{m}: throughput and p50/p99 against closed-loop clients, per server")
        plt.close(fig)
