"""``edgeloop edge-model``: fit the edge agent's local anomaly model from a CSV and export it to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.output import console, fail
from edgeloop.errors import EdgeLoopError

__all__ = ["app"]

app = typer.Typer()


@app.command("edge-model")
def edge_model(
    csv: Annotated[Path, typer.Option("--csv", help="Healthy operation of one machine: a CSV with a header "
                                      "'ts,CHANNEL,...' (ts in ms), one row per reading.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the ONNX model.")],
    window_s: Annotated[float, typer.Option(help="Feature window (seconds).")] = 10.0,
    every_s: Annotated[float, typer.Option(help="Score every N seconds.")] = 1.0,
) -> None:
    """Fit the agent's local anomaly model (a Gaussian over feature windows) and export it to ONNX."""
    import numpy as np

    from edgeloop.agent.inference import train_edge_model

    try:
        with csv.open() as f:
            header = f.readline().strip().split(",")
        data = np.genfromtxt(csv, delimiter=",", skip_header=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {csv}: {exc}") from None
    if len(header) < 2 or header[0] != "ts" or data.shape[1] != len(header):
        raise fail(f"{csv}: expected a header 'ts,CHANNEL,...' and that many columns per row")
    order = np.argsort(data[:, 0], kind="stable")
    console.print(f"training on {len(data)} readings of {', '.join(header[1:])} ...")
    try:
        blob = train_edge_model(data[order, 0].astype(np.int64), data[order, 1:], header[1:],
                                window_s=window_s, every_s=every_s)
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.write_bytes(blob)
    console.print(f"wrote {out} ({len(blob) / 1e6:.1f} MB); the agent loads only signed models: register it on the "
                  "platform and give the agent the signed .elm file it exports (or push it to the gateway)")


