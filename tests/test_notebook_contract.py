"""Every committed notebook follows the contract: numbered, outputs stripped, a tagged
parameters cell with typed, commented parameters, the project kernel, a report.begin."""

import json
import re
from pathlib import Path

import pytest

from hpcml.params import parse_parameters_cell

pytestmark = pytest.mark.unit

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS, "no notebooks committed"
    for nb in NOTEBOOKS:
        assert re.match(r"^\d\d_[a-z0-9_]+\.ipynb$", nb.name), f"{nb.name}: name must be NN_topic.ipynb"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_stripped(nb_path):
    nb = json.loads(nb_path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{nb_path.name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, f"{nb_path.name} cell {i} has an execution count"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), f"{nb_path.name}: first code cell must be tagged 'parameters'"
    params = parse_parameters_cell("".join(first["source"]))
    assert params, f"{nb_path.name}: parameters cell declares nothing"
    for p in params:
        assert p.type_name, f"{nb_path.name}: parameter {p.name} needs a type annotation"
        assert p.comment, f"{nb_path.name}: parameter {p.name} needs a comment"
    import nbformat
    from papermill.translators import PythonTranslator

    pm_names = [p.name for p in PythonTranslator.inspect(nbformat.v4.new_code_cell("".join(first["source"])))]
    assert pm_names == [p.name for p in params], (
        f"{nb_path.name}: papermill cannot parse every parameter line (avoid '=' in comments): {pm_names}")
    assert nb["metadata"]["kernelspec"]["name"] == "hpcml"
    src = "".join("".join(c["source"]) for c in code)
    assert f'report.begin("{nb_path.stem}"' in src, f"{nb_path.name}: must call report.begin(\"{nb_path.stem}\", ...)"
    assert "assert " in "".join(code[-1]["source"]), f"{nb_path.name}: last code cell must check recorded metrics"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_narrative_opens_and_closes(nb_path):
    nb = json.loads(nb_path.read_text())
    assert nb["cells"][0]["cell_type"] == "markdown", f"{nb_path.name}: must open with a markdown introduction"
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    assert "what you will learn" in text, f"{nb_path.name}: say what the reader will learn"
