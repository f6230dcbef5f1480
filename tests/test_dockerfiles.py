"""Structural lint of the Dockerfiles (no Docker engine here to build them): pinned base
images, multi-stage, non-root USER, a health check or documented probes, no secrets."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOCKER = Path(__file__).resolve().parent.parent / "docker"
FILES = sorted(DOCKER.glob("Dockerfile.*"))


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(ARG defaults, [(INSTRUCTION, arguments)]) with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    instr = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        instr.append((op.upper(), rest.strip()))
    args = {}
    for op, rest in instr:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
    return args, instr


def base_images(text: str) -> list[str]:
    args, instr = parse(text)
    out = []
    for op, rest in instr:
        if op == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
            out.append(image)
    return out


def pinned(image: str, stages: set[str]) -> bool:
    if image in stages:
        return True
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    return ":" in name and not name.endswith(":latest") and "$" not in image


def test_dockerfiles_exist():
    assert {p.name for p in FILES} >= {"Dockerfile.train", "Dockerfile.serve"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_base_images_pinned_and_multistage(path):
    text = path.read_text()
    _, instr = parse(text)
    stages = {rest.split()[-1] for op, rest in instr if op == "FROM" and " AS " in rest.upper()}
    images = base_images(text)
    assert len(images) >= 2, f"{path.name}: must be multi-stage (found {len(images)} FROM)"
    for img in images:
        assert pinned(img, stages), f"{path.name}: base image {img!r} must be pinned to a tag or digest (not latest)"
    assert any(op == "COPY" and "--from=" in rest for op, rest in instr), f"{path.name}: final stage must COPY --from a build stage"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_runs_as_non_root(path):
    _, instr = parse(path.read_text())
    users = [rest for op, rest in instr if op == "USER"]
    assert users, f"{path.name}: needs a USER instruction"
    last = users[-1].split(":")[0]
    assert last not in ("root", "0"), f"{path.name}: final USER must be non-root, got {users[-1]}"
    assert last in ("1000", "hpcml"), f"{path.name}: final USER should be uid 1000 (the manifests' runAsUser)"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_health_documented_and_no_secrets(path):
    text = path.read_text()
    _, instr = parse(text)
    has_hc = any(op == "HEALTHCHECK" for op, _ in instr)
    assert has_hc or re.search(r"#.*(probe|liveness|health)", text, re.I), f"{path.name}: HEALTHCHECK or documented probes"
    assert not re.search(r"(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|PASSWORD)\s*=", text), f"{path.name}: no secrets in ENV/ARG"
    assert not any(op == "ADD" and rest.startswith("http") for op, rest in instr), f"{path.name}: no remote ADD"
    pip_lines = [rest for op, rest in instr if op == "RUN" and "pip install" in rest]
    # third-party packages installed by name are pinned (==), local paths/flags excepted
    for line in pip_lines:
        for seg in line.split("&&"):
            if "pip install" not in seg:
                continue
            for tok in seg.split("pip install", 1)[1].split():
                if tok.startswith(("-", "/", ".", "http")) or "=" in tok and "==" not in tok:
                    continue
                assert "==" in tok, f"{path.name}: pip package {tok!r} must be pinned with =="


@pytest.mark.parametrize("text,ok", [
    ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nCOPY --from=a /x /x\nUSER 1000\nHEALTHCHECK CMD true\n", True),
    ("FROM python:latest AS a\nFROM python\nCOPY --from=a /x /x\nUSER 1000\n", False),
], ids=["good", "latest-and-untagged"])
def test_lint_catches_unpinned(text, ok):
    _, instr = parse(text)
    stages = {rest.split()[-1] for op, rest in instr if op == "FROM" and " AS " in rest.upper()}
    assert all(pinned(i, stages) for i in base_images(text)) is ok
