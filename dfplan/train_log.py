"""The training log: metrics.jsonl records and the loss curve drawn from them."""

from __future__ import annotations

import io
import json
from pathlib import Path

from dfplan.files import atomic_write_bytes


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return records


def write_curve(metrics_path: Path, png_path: Path, title: str) -> None:
    """Loss vs step from metrics.jsonl, as a PNG (no pyplot: no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    if not records:
        return
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (MSE, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())
