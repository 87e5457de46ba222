"""``edgeloop rul-model``: train the remaining-useful-life model on C-MAPSS engines; its options are shared with
``edgeloop eval rul``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeloop.cli.output import console, fail

if TYPE_CHECKING:
    from edgeloop.rul.model import RulParams

__all__ = ["RUL_CAP", "RUL_RATE", "RUL_STRIDE", "RUL_TRAIN", "RUL_TREES", "app", "rul_params"]

app = typer.Typer()

RUL_TRAIN = typer.Option("--train", help="Engines run to failure in C-MAPSS format (e.g. train_FD001.txt).")
RUL_TREES = typer.Option("--trees", min=1, help="Boosting rounds of the gradient-boosted trees (default 300).")
RUL_STRIDE = typer.Option("--stride", min=1, help="Train on every n-th cycle of each engine (default 2).")
RUL_CAP = typer.Option("--cap", min=1, help="RUL cap (cycles) of the target.")
RUL_RATE = typer.Option("--learning-rate", min=0.001, max=1.0, help="Boosting learning rate (default 0.05).")


def rul_params(trees: int | None, stride: int | None, cap: float, rate: float | None) -> RulParams:
    """The model's parameters from the options (an option not given keeps the model's default)."""
    from dataclasses import replace

    from edgeloop.rul.model import RulParams

    p = RulParams(cap=cap)
    return replace(p, n_estimators=trees or p.n_estimators, stride=stride or p.stride,
                   learning_rate=rate or p.learning_rate)


@app.command("rul-model")
def rul_model(
    train: Annotated[Path, RUL_TRAIN],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the ONNX model.")],
    trees: Annotated[int | None, RUL_TREES] = None,
    stride: Annotated[int | None, RUL_STRIDE] = None,
    cap: Annotated[float, RUL_CAP] = 125.0,
    rate: Annotated[float | None, RUL_RATE] = None,
) -> None:
    """Train the remaining-useful-life model on engines run to failure; write the ONNX model the platform runs."""
    from edgeloop.evaluation.cmapss_data import CmapssDataError, load_runs
    from edgeloop.rul.model import train_rul

    try:
        engines = load_runs(train)
        trained = train_rul(engines, rul_params(trees, stride, cap, rate), progress=console.print)
    except (CmapssDataError, ValueError) as exc:
        raise fail(str(exc)) from None
    out_path.write_bytes(trained.onnx)
    console.print(f"wrote {out_path} ({len(trained.onnx) / 1e6:.2f} MB): {len(trained.spec.names)} features of "
                  f"{', '.join(trained.spec.kept)} and age; {trained.interval.coverage:.0%} interval from "
                  "cross-validation residuals")


