"""Loss curves of a run folder as a PNG, from its `metrics.jsonl`."""

from __future__ import annotations

import io
import json

from t2l_ray import storage


def read_metrics(run_dir: str) -> list[dict]:
    uri = storage.join(run_dir, "metrics.jsonl")
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a training run folder") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{uri}:{number}: not JSON ({error})") from None
    if not rows:
        raise ValueError(f"{uri} is empty: the run has not logged a step yet")
    return rows


def loss_change(rows: list[dict], key: str = "loss") -> tuple[float, float]:
    """(mean of the first fifth, mean of the last fifth) of the logged rows' `key`: a loss curve's start and end
    without the noise of single steps."""
    fifth = max(1, len(rows) // 5)
    return (sum(r[key] for r in rows[:fifth]) / fifth, sum(r[key] for r in rows[-fifth:]) / fifth)


def plot_run(run_dir: str, out: str | None = None) -> str:
    """Render loss (and the LM part of it) and the learning rate against the step; returns the PNG's URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    fig, loss_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis.plot(steps, [r["loss"] for r in rows], label="loss", color="tab:blue")
    if all("lm_loss" in r for r in rows):
        loss_axis.plot(steps, [r["lm_loss"] for r in rows], label="LM loss", color="tab:cyan", linestyle="--")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [r.get("lr", 0.0) for r in rows], label="lr", color="tab:orange", alpha=0.6)
    lr_axis.set_ylabel("learning rate")
    handles = loss_axis.get_legend_handles_labels()[0] + lr_axis.get_legend_handles_labels()[0]
    loss_axis.legend(handles, [h.get_label() for h in handles], loc="upper right")
    loss_axis.set_title(f"{run_dir}: {len(rows)} logged steps, last loss {rows[-1]['loss']:.4f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    out = out or storage.join(run_dir, "loss.png")
    storage.write_bytes(out, buffer.getvalue())
    return out
