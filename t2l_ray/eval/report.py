"""The eval report: rows = adapter sets (`base` first), columns = tasks + mean, as markdown, JSON and a bar chart.

Scores are percentages: ROUGE-L F1 for SNI-style tasks, accuracy (log-likelihood choice) for the
multiple-choice benchmarks, final-number match for GSM8K. `mean` averages a row's scored tasks; a row with
missing or failed cells is marked and its mean says over how many tasks it runs. Written through
`t2l_ray.storage`, so the output folder may be a path or a URI:

- `results.md`: the main table, an exact-match table for SNI-style tasks, notes on missing cells and errors;
- `results.json`: `{"columns", "metrics", "rows": [{"name", "scores", "mean", "mean_over", "exact_match", "n"}],
  "missing", "errors", "sources", "seconds", "config"}`;
- `results.png`: grouped bars, one group per column, one bar per row;
- `predictions/{row}/{task}.jsonl`: what each example produced.
"""

from __future__ import annotations

import io
import json

from t2l_ray import storage
from t2l_ray.config import to_dict

METRIC_LABELS = {"rouge_l": "ROUGE-L", "accuracy": "acc (log-lik.)", "number_match": "number match"}
MEAN = "mean"


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 2)


def build_table(result) -> dict:
    """The JSON table (percentages; None where a cell has no score)."""
    columns = [t.name for t in result.tasks]
    table_rows = []
    for row in result.rows:
        scores, exact, counts = {}, {}, {}
        for task in result.tasks:
            cell = result.cells.get((row, task.name))
            ok = cell is not None and "error" not in cell
            scores[task.name] = _pct(cell["score"]) if ok else None
            counts[task.name] = cell["n"] if ok else 0
            if "exact_match" in task.secondary:
                exact[task.name] = _pct(cell["metrics"].get("exact_match")) if ok else None
        present = [v for v in scores.values() if v is not None]
        table_rows.append({
            "name": row, "scores": scores,
            "mean": round(sum(present) / len(present), 2) if present else None,
            "mean_over": len(present), "exact_match": exact, "n": counts,
        })
    return {
        "columns": columns + [MEAN],
        "metrics": {t.name: t.metric for t in result.tasks},
        "rows": table_rows,
        "missing": result.missing,
        "errors": [{"set": c["set"], "task": c["task"], "error": c["error"]} for c in result.errors],
        "sources": {t.name: t.source for t in result.tasks},
        "seconds": round(result.seconds, 1),
        "config": to_dict(result.config),
    }


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown(table: dict) -> str:
    tasks = table["columns"][:-1]
    lines = [
        "# Evaluation",
        "",
        "Scores in %: " + ", ".join(sorted({f"{METRIC_LABELS[m]} ({_kind(m)})" for m in table["metrics"].values()}))
        + "." + _method_note(set(table["metrics"].values())),
        "",
        "| adapters | " + " | ".join(tasks) + f" | {MEAN} |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    complete = len(tasks)
    for row in table["rows"]:
        mean = _cell(row["mean"])
        if row["mean"] is not None and row["mean_over"] < complete:
            mean += f" ({row['mean_over']}/{complete})"
        lines.append(f"| {row['name']} | " + " | ".join(_cell(row["scores"][t]) for t in tasks) + f" | {mean} |")
    sni = [t for t in tasks if table["metrics"][t] == "rouge_l"]
    if sni:
        lines += ["", "Exact match (%) on the SNI-style tasks:", "",
                  "| adapters | " + " | ".join(sni) + " |", "|---|" + "---:|" * len(sni)]
        for row in table["rows"]:
            lines.append(f"| {row['name']} | " + " | ".join(_cell(row["exact_match"].get(t)) for t in sni) + " |")
    if table["missing"]:
        lines += ["", "No adapter (cell left out): " + "; ".join(f"{m['set']}/{m['task']}" for m in table["missing"]) + "."]
    if table["errors"]:
        lines += ["", "Failed cells:"] + [f"- {e['set']}/{e['task']}: {e['error']}" for e in table["errors"]]
    lines += ["", "Sources: " + "; ".join(f"{t}: {s}" for t, s in table["sources"].items()) + "."]
    return "\n".join(lines) + "\n"


def _method_note(used: set[str]) -> str:
    notes = []
    if used & {"rouge_l", "number_match"}:
        notes.append("generations are greedy")
    if "accuracy" in used:
        notes.append("multiple-choice benchmarks pick the choice with the highest log-likelihood (nothing is generated)")
    return (" " + "; ".join(notes).capitalize() + ".") if notes else ""


def _kind(metric: str) -> str:
    return {"rouge_l": "SNI-style tasks", "accuracy": "multiple choice", "number_match": "GSM8K"}[metric]


def bar_chart(table: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = table["columns"]
    rows = table["rows"]
    width = 0.8 / max(1, len(rows))
    fig, axis = plt.subplots(figsize=(max(6.0, 1.5 + 0.3 * len(columns) * max(1, len(rows))), 4.5))
    for index, row in enumerate(rows):
        values = [row["scores"].get(c) if c != MEAN else row["mean"] for c in columns]
        xs = [i + (index - (len(rows) - 1) / 2) * width for i in range(len(columns))]
        axis.bar(xs, [v if v is not None else 0.0 for v in values], width, label=row["name"])
    axis.set_xticks(range(len(columns)))
    axis.set_xticklabels([c if len(c) <= 22 else c[:20] + "…" for c in columns], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("score (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8)
    axis.set_title("t2l-ray eval: " + ", ".join(sorted({METRIC_LABELS[m] for m in table["metrics"].values()})))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_predictions(result) -> dict[str, str]:
    """`predictions/{set}/{task}.jsonl`: every example's prediction (or choice log-probs) and its scores."""
    written = {}
    for (row, task), cell in sorted(result.cells.items()):
        if "error" in cell:
            continue
        uri = storage.join(result.config.run.output_dir, "predictions", row, f"{task}.jsonl")
        lines = [json.dumps(p, ensure_ascii=False) for p in cell.get("predictions", [])]
        storage.write_text(uri, "".join(line + "\n" for line in lines))
        written[f"{row}/{task}"] = uri
    return written


def write_report(result) -> dict[str, str]:
    """Write results.md, results.json, results.png and predictions/ under the run's output_dir; returns URIs."""
    out = result.config.run.output_dir
    table = build_table(result)
    files = {
        "markdown": storage.join(out, "results.md"),
        "json": storage.join(out, "results.json"),
        "chart": storage.join(out, "results.png"),
    }
    write_predictions(result)
    storage.write_text(files["json"], json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    storage.write_text(files["markdown"], markdown(table))
    storage.write_bytes(files["chart"], bar_chart(table))
    files["predictions"] = storage.join(out, "predictions")
    return files
