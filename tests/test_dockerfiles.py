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
    assert {p.name for p in FILES} >= {"Dockerfile.train", "Dockerfile.train-cuda", "Dockerfile.serve"}


def _cuda_findings(text: str) -> list[str]:
    """What a CUDA/NCCL training image must have: a pinned nvidia/cuda base with cuDNN (devel to
    build, runtime to run), Horovod built with NCCL for GPU tensors, the EFA userspace from a
    pinned installer without the kernel module (the host's), and no default uid-1000 user left."""
    args, instr = parse(text)
    images = base_images(text)
    out = []
    if not images or not all(i.startswith("nvidia/cuda:") and "cudnn" in i for i in images):
        out.append(f"every stage must start from a pinned nvidia/cuda cudnn image, got {images}")
    if not any("devel" in i for i in images[:-1]) or "runtime" not in images[-1]:
        out.append("build on a -devel image, run on a -runtime image")
    runs = " ".join(rest for op, rest in instr if op == "RUN")
    if "HOROVOD_GPU_OPERATIONS=NCCL" not in runs:
        out.append("Horovod must be built with HOROVOD_GPU_OPERATIONS=NCCL")
    if not re.fullmatch(r"\d+\.\d+\.\d+", args.get("EFA_INSTALLER_VERSION", "")):
        out.append("the EFA installer version must be pinned (ARG EFA_INSTALLER_VERSION=x.y.z)")
    if "--skip-kmod" not in runs:
        out.append("the EFA installer must skip the kernel module (--skip-kmod): the host provides it")
    if "ofi-nccl" not in " ".join(rest for op, rest in instr if op == "ENV"):
        out.append("the aws-ofi-nccl plugin must be on the library path")
    if "userdel" not in runs:
        out.append("remove the base image's default uid-1000 user before creating hpcml (uid 1000)")
    return out


def test_cuda_training_image():
    """The GPU MPIJob's image (hpcml.k8s.train.CUDA_IMAGE) is built from this Dockerfile."""
    from hpcml.k8s import train as kt

    text = (DOCKER / "Dockerfile.train-cuda").read_text()
    assert not _cuda_findings(text), _cuda_findings(text)
    image = kt.CUDA_IMAGE.split(":")[0].rsplit("/", 1)[-1]
    assert f"-t ghcr.io/example/{image}:" in text, "the Build line must tag the image the MPIJob runs"


@pytest.mark.parametrize("change,finding", [
    (("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", "python:3.11.11-slim-bookworm"), "nvidia/cuda"),
    (("HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_CPU_OPERATIONS=GLOO"), "NCCL"),
    (("EFA_INSTALLER_VERSION=1.38.0", "EFA_INSTALLER_VERSION=latest"), "pinned"),
    (("--skip-kmod", ""), "kernel module"),
], ids=["cpu-base", "no-nccl", "efa-unpinned", "kmod"])
def test_cuda_lint_catches_a_broken_image(change, finding):
    text = (DOCKER / "Dockerfile.train-cuda").read_text().replace(*change)
    assert any(finding in f for f in _cuda_findings(text))


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
