import pytest

import json

from hpcml.params import (
    ParameterError,
    check_values,
    load_profile,
    parameters_source,
    parse_override,
    parse_parameters_cell,
    values_for,
)

pytestmark = pytest.mark.unit

CELL = """seed: int = 0  # random seed
rate: float = 0.1  # learning rate
name: str = "x"  # a name
flags: list = []  # things
legacy = 3  # untyped
"""


def test_parse_parameters_cell():
    ps = parse_parameters_cell(CELL)
    assert [(p.name, p.type_name, p.default, p.comment) for p in ps] == [
        ("seed", "int", "0", "random seed"),
        ("rate", "float", "0.1", "learning rate"),
        ("name", "str", "'x'", "a name"),
        ("flags", "list", "[]", "things"),
        ("legacy", "", "3", "untyped"),
    ]


@pytest.mark.parametrize(
    "values, match",
    [
        ({"seed": "zero"}, "parameter 'seed' must be int"),
        ({"seed": True}, "parameter 'seed' must be int"),
        ({"rate": "fast"}, "parameter 'rate' must be float"),
        ({"sead": 1}, "unknown parameter 'sead'"),
    ],
    ids=["str-for-int", "bool-for-int", "str-for-float", "typo"],
)
def test_bad_values_named(values, match):
    with pytest.raises(ParameterError, match=match):
        check_values("00_x", parse_parameters_cell(CELL), values)


def test_int_accepted_for_float_and_common_applied():
    declared = parse_parameters_cell(CELL)
    prof = {"common": {"seed": 7, "unrelated": 1}, "00_x": {"rate": 1}}
    assert values_for("00_x", prof, declared) == {"seed": 7, "rate": 1}


@pytest.mark.parametrize("source", [CELL, CELL.splitlines(keepends=True)], ids=["string", "lines"])
def test_parameters_source_from_the_tagged_cell(tmp_path, source):
    cells = [{"cell_type": "markdown", "metadata": {"tags": ["parameters"]}, "source": "not code"},
             {"cell_type": "code", "metadata": {}, "source": "x = 1"},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source}]
    nb = tmp_path / "00_x.ipynb"
    nb.write_text(json.dumps({"cells": cells}))
    assert parameters_source(nb) == CELL
    nb.write_text(json.dumps({"cells": cells[:2]}))
    assert parameters_source(nb) is None


def test_missing_and_malformed_profile(tmp_path):
    with pytest.raises(ParameterError, match="parameters file not found"):
        load_profile(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("00_x: 3\n")
    with pytest.raises(ParameterError, match="must map notebook names"):
        load_profile(bad)


def test_parse_override():
    assert parse_override("02_train.epochs=5") == ("02_train", "epochs", 5)
    assert parse_override("seed=1") == (None, "seed", 1)
    with pytest.raises(ParameterError, match="name=value"):
        parse_override("seed")


@pytest.mark.parametrize("profile", ["ci.yaml", "full.yaml"])
def test_shipped_profiles_match_the_notebooks(profile):
    """Every value in params/*.yaml names a declared parameter of its notebook, with its type."""
    from pathlib import Path

    from hpcml import pipeline

    prof = load_profile(Path(__file__).resolve().parent.parent / "params" / profile)
    stems = {p.stem for p in pipeline.discover()}
    assert set(prof) - {"common"} <= stems, f"{profile} names unknown notebooks"
    for nb in pipeline.discover():
        values_for(nb.stem, prof, pipeline.declared_parameters(nb))
