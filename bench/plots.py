"""PNG plots for the report (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first


def lines(
    path: Path,
    title: str,
    xlabel: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    *,
    right: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    right_label: str = "",
    logx: bool = False,
    hlines: dict[str, float] | None = None,
) -> str:
    """Line plot of named (x, y) series, optionally a second y axis; returns the file name."""
    figure, axis = plt.subplots(figsize=(8, 4.2), dpi=100)
    for n, (name, (x, y)) in enumerate(series.items()):
        axis.plot(x, y, marker="o", markersize=3, label=name, color=f"C{n}")
    for name, value in (hlines or {}).items():
        axis.axhline(value, linestyle=":", color="grey")
        axis.annotate(name, (0, value), xycoords=("axes fraction", "data"), fontsize=8)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if logx:
        axis.set_xscale("log", base=2)
    handles, labels = axis.get_legend_handles_labels()
    if right:
        other = axis.twinx()
        for n, (name, (x, y)) in enumerate(right.items(), start=len(series)):
            other.plot(x, y, linestyle="--", marker="x", markersize=3, label=name, color=f"C{n}")
        other.set_ylabel(right_label)
        more_handles, more_labels = other.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    axis.legend(handles, labels, fontsize=8, loc="best")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path.name


def bars(
    path: Path,
    title: str,
    names: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    ylabel: str,
    *,
    hlines: dict[str, float] | None = None,
) -> str:
    """Grouped bar chart, one group of bars per name; returns the file name."""
    figure, axis = plt.subplots(figsize=(8, 4.2), dpi=100)
    width = 0.8 / max(len(groups), 1)
    for n, (label, values) in enumerate(groups.items()):
        axis.bar([i + n * width for i in range(len(names))], values, width, label=label)
    for name, value in (hlines or {}).items():
        axis.axhline(value, linestyle=":", color="grey")
        axis.annotate(name, (0, value), xycoords=("axes fraction", "data"), fontsize=8)
    axis.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path.name
