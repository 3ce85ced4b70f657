"""Figure saving shared by the studies' `plot` functions (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save(fig, out_dir: Path, name: str, *, dpi: int = 130, bbox_inches: str | None = "tight"):
    """Write `fig` to out_dir/<name>.png (creating out_dir), close it and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    plt.close(fig)
    return path
