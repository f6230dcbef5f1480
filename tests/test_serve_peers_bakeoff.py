"""The bake-off's arithmetic (hpcml.serve.bakeoff): per-level statistics, the issue's target
(the project over the best peer at the highest load where that peer's p99 <= 50 ms, 95 % low
bound over rounds), its settings' checks, and its curves."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from hpcml.serve import bakeoff, plots

pytestmark = pytest.mark.unit


def _pt(rps, p99, errors=0):
    return {"rps": list(rps), "p50_ms": [p / 3 for p in p99], "p99_ms": list(p99), "errors": [errors] * len(rps)}


POINTS = {
    "hpcml": {"4": _pt([1000, 1100, 1050], [6, 6, 7]), "32": _pt([1500, 1550, 1520], [30, 33, 31])},
    "triton": {"4": _pt([400, 410, 405], [15, 14, 15]), "32": _pt([950, 990, 970], [45, 49, 48])},
    "kserve": {"4": _pt([900, 880, 890], [8, 8, 9]), "32": _pt([900, 910, 905], [70, 80, 75])},
}


def test_stats_average_rounds_and_take_median_latency():
    st = bakeoff.stats(POINTS)
    assert st["hpcml"]["4"]["rps"] == pytest.approx(1050)
    assert st["triton"]["32"]["p99_ms"] == 48 and st["kserve"]["4"]["errors"] == 0


def test_target_picks_the_best_peer_at_its_highest_load_within_the_objective():
    t = bakeoff.target(POINTS)
    # kserve meets 50 ms only at 4 clients (890 req/s); triton at 32 clients (970 req/s): triton is the best peer.
    assert t["peer"] == "triton" and t["clients"] == 32
    assert t["ratio"] == pytest.approx((1500 / 950 + 1550 / 990 + 1520 / 970) / 3)
    assert t["ratio_low95"] < t["ratio"] and t["met"] is True


def test_target_is_not_met_when_the_interval_reaches_below_one():
    pts = {"hpcml": {"4": _pt([900, 1200], [5, 5])}, "triton": {"4": _pt([1000, 1000], [5, 5])}}
    t = bakeoff.target(pts, peers=("triton",))
    assert t["ratio"] == pytest.approx(1.05) and not t["met"]


def test_target_without_any_peer_within_the_objective_or_with_errors():
    pts = {"hpcml": {"4": _pt([1000, 1000], [5, 5])}, "triton": {"4": _pt([1000, 1000], [60, 70])},
           "kserve": {"4": _pt([1000, 1000], [5, 5], errors=1)}}
    assert bakeoff.target(pts) == {"peer": None, "clients": None, "met": False}


def test_settings_refuse_what_cannot_give_an_interval():
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        bakeoff.Settings(rounds=1)
    with pytest.raises(ValueError, match="concurrencies must be positive"):
        bakeoff.Settings(concurrencies=(0, 4))


def test_default_cpus_keep_the_client_off_the_servers_cores():
    server, client = bakeoff.default_cpus()
    if "," in server or server != client:
        assert client not in server.split(",")


def test_curves_one_line_per_server_and_the_objective():
    fig = plots.bakeoff_curves(bakeoff.stats(POINTS), "cnn", 50.0)
    a1, a2 = fig.axes
    assert [line.get_label() for line in a1.get_lines()] == ["hpcml", "triton", "kserve"]
    assert list(a1.get_lines()[0].get_xdata()) == [4, 32]
    assert any(line.get_label() == "50 ms objective" for line in a2.get_lines())
    plt.close(fig)


def _result():
    import numpy as np

    from hpcml.serve import conformance

    x = np.zeros((1, 784), np.float32)
    cs = conformance.cases("mnist", 32, x)
    ok = [{"case": c.name, "expect": c.expect, "status": c.expect, "ok": True, "error_case": c.error_case,
           "detail": ""} for c in cs]
    lax = [dict(r, status=200, ok=r["expect"] == 200) if r["case"] == "unknown input name" else r for r in ok]
    rows = {"hpcml": ok, "triton": ok, "kserve": lax}
    pts = dict(POINTS, **{"hpcml size 1": POINTS["kserve"], "triton no batcher": POINTS["kserve"]})
    return {"settings": {"concurrencies": [4, 32], "rounds": 3}, "unavailable": {},
            "models": {"cnn": {"stats": bakeoff.stats(pts), "target": bakeoff.target(pts)}},
            "conformance": {"rows": rows, "differences": conformance.differences(rows)}}


def test_the_notebook_record_states_what_was_measured(build_tmp):
    from hpcml import report
    from hpcml.serve import bakeoff_report

    report.begin("99_bakeoff", params={})
    res = _result()
    bakeoff_report.record(res)
    text = str(bakeoff_report.say(res))
    assert report.get("bakeoff_peer_cnn") == "triton" and report.get("bakeoff_clients_cnn") == 32
    assert report.get("bakeoff_batching_gain_hpcml_cnn") == pytest.approx(1520 / 905, rel=0.01)
    assert report.get("conformance_differences") == 1 and report.get("conformance_client_visible") == 1
    assert report.get("conformance_project_all_expected") is True
    assert "at 32 clients" in text and "**met**" in text
    assert report.check_conclusions()["bakeoff_target_met_cnn"] is True
    assert len(bakeoff_report.table(res)) == 10
    assert {r["case"]: r["kserve"] for r in bakeoff_report.conformance_table(res)}["unknown input name"] == 200
