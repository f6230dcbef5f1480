"""Every committed notebook follows the contract: numbered, outputs stripped, a tagged
parameters cell with typed, commented parameters, the project kernel, a report.begin that
reads the parameters itself, and thin cells (no loop, function or class statement, at most
15 lines) between the parameters cell and the final checks cell."""

import ast
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
    assert f'report.begin("{nb_path.stem}")' in src, (
        f"{nb_path.name}: must call report.begin(\"{nb_path.stem}\") (it reads the parameters cell itself)")
    assert "assert " in "".join(code[-1]["source"]), f"{nb_path.name}: last code cell must check recorded metrics"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_narrative_opens_and_closes(nb_path):
    nb = json.loads(nb_path.read_text())
    assert nb["cells"][0]["cell_type"] == "markdown", f"{nb_path.name}: must open with a markdown introduction"
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    assert "what you will learn" in text, f"{nb_path.name}: say what the reader will learn"


MAX_CELL_LINES = 15
_BLOCK_STATEMENTS = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
#: A line that starts a loop, function or class: also a multi-line comprehension's ``for`` line.
_BLOCK_LINE = re.compile(r"^\s*(for|while|def|class)\b")


def thin_cell_problems(source: str) -> list[str]:
    """Why a code cell is not thin (empty when it is): over 15 lines, or a ``for``/``while``/
    ``def``/``class`` statement (a comprehension on one line is fine)."""
    problems = []
    lines = source.splitlines()
    if len(lines) > MAX_CELL_LINES:
        problems.append(f"{len(lines)} lines (at most {MAX_CELL_LINES}): move the logic into hpcml")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, _BLOCK_STATEMENTS):
            problems.append(f"line {node.lineno}: a {type(node).__name__} statement: move it into a hpcml function")
    problems += [f"line {n}: {line.strip()[:60]!r} starts a loop, function or class (a comprehension fits one line)"
                 for n, line in enumerate(lines, 1) if _BLOCK_LINE.match(line)
                 and not any(f"line {n}:" in p for p in problems)]
    return problems


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_cells_are_thin(nb_path):
    """Every code cell but the parameters cell (the first) and the checks cell (the last)."""
    nb = json.loads(nb_path.read_text())
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    bad = {i: thin_cell_problems("".join(c["source"])) for i, c in code[1:-1]}
    bad = {i: p for i, p in bad.items() if p}
    assert not bad, f"{nb_path.name}: cells that are not thin: " + "; ".join(
        f"cell {i}: {', '.join(p)}" for i, p in bad.items())


@pytest.mark.parametrize(
    "source, problem",
    [
        ("for x in range(3):\n    print(x)", "a For statement"),
        ("while False:\n    pass", "a While statement"),
        ("def f():\n    return 1", "a FunctionDef statement"),
        ("class C:\n    pass", "a ClassDef statement"),
        ("if True:\n    for x in ():\n        pass", "a For statement"),
        ("rows = [x\n        for x in range(3)]", "starts a loop"),
        ("\n".join(f"x{i} = {i}" for i in range(16)), "16 lines (at most 15)"),
    ],
    ids=["for", "while", "def", "class", "nested-for", "multi-line-comprehension", "too-long"],
)
def test_thin_cell_rule_catches(source, problem):
    assert any(problem in p for p in thin_cell_problems(source)), thin_cell_problems(source)


def test_thin_cell_rule_allows_one_line_comprehensions():
    source = "\n".join(["xs = [x * 2 for x in range(3)]", 'print("\\n".join(str(x) for x in xs))',
                         "if xs:\n    print(xs[0])"] + [f"y{i} = {i}" for i in range(11)])
    assert len(source.splitlines()) == MAX_CELL_LINES
    assert thin_cell_problems(source) == []
