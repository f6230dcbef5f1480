"""The layer contract (hpcml.layers): it holds for the package, and it fails when broken."""

from pathlib import Path

import pytest

from hpcml import layers


@pytest.mark.unit
def test_the_package_keeps_the_layer_contract():
    problems = layers.check()
    assert not problems, "layer contract broken:\n" + "\n".join(problems)


@pytest.mark.unit
def test_every_module_has_a_layer():
    assert [m for m, layer in layers.table() if layer is None] == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "hpcml"
    for rel, text in {"__init__.py": "", **files}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.unit
@pytest.mark.parametrize("files, expected", [
    pytest.param({"k8s/__init__.py": "", "k8s/a.py": "from hpcml.k8s import b\n",
                  "k8s/b.py": "def f():\n    from hpcml.k8s import a\n"},
                 "import cycle: hpcml.k8s.a -> hpcml.k8s.b", id="cycle-through-a-lazy-import"),
    pytest.param({"k8s/__init__.py": "", "k8s/a.py": "from hpcml.train import worker\n",
                  "train/__init__.py": "", "train/worker.py": ""},
                 "hpcml.k8s.a (pure) imports hpcml.train.worker (backend)", id="builder-imports-a-backend"),
    pytest.param({"k8s/__init__.py": "", "k8s/a.py": "def f():\n    import subprocess\n"},
                 "hpcml.k8s.a (pure) imports subprocess", id="builder-starts-a-process"),
    pytest.param({"train/__init__.py": "", "train/spec.py": "import boto3\n"},
                 "hpcml.train.spec (spec) imports boto3", id="spec-talks-to-aws"),
    pytest.param({"newthing.py": ""}, "hpcml.newthing: no layer", id="module-without-a-layer"),
])
def test_the_contract_fails_when_broken(tmp_path, files, expected):
    problems = layers.check(_package(tmp_path, files))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.unit
def test_type_checking_imports_do_not_count(tmp_path):
    root = _package(tmp_path, {"k8s/__init__.py": "", "train/__init__.py": "", "train/worker.py": "",
                               "k8s/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                           "    from hpcml.train import worker\n"})
    assert layers.check(root) == []
