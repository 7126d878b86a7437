"""A sweep's summary: every job's overrides and metrics, sorted by the objective.

Written in the sweep folder (and on the sweep's MLflow run): ``summary.csv`` (every
metric), ``summary.md`` (the table, the best job as a command line to paste),
``objective.png`` (the objective against each swept value), and ``report.html``, the
same on one self-contained page, each job linked to its own report. A job folder
without ``result.json`` (a job killed outright) is a failed row too.
"""

from __future__ import annotations

import csv
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from lettucify.sweep.job import COMPLETED, FAILED, RESULT_FILE, JobResult

CSV_FILE, MARKDOWN_FILE, PLOT_FILE = "summary.csv", "summary.md", "objective.png"
# The metrics the Markdown table shows besides the objective, when jobs report them.
SHOWN_METRICS = ("val_acc", "val_loss", "test_top1", "test_macro_f1", "train_time_s")


@dataclass
class Summary:
    rows: List[JobResult]  # best first; failed jobs last
    objective: str
    maximize: bool
    swept: List[str]  # the override keys whose values differ between jobs
    folders: List[Path] = field(default_factory=list)  # each row's job folder

    @property
    def completed(self) -> List[JobResult]:
        return [r for r in self.rows if r.status == COMPLETED and r.value is not None]

    @property
    def failed(self) -> List[JobResult]:
        return [r for r in self.rows if r.status != COMPLETED]

    @property
    def best(self) -> Optional[JobResult]:
        return self.completed[0] if self.completed else None


def override_map(overrides: Sequence[str]) -> Dict[str, str]:
    """``["+a.b=1", "model=cnn16"]`` -> ``{"a.b": "1", "model": "cnn16"}``."""
    pairs = (o.partition("=") for o in overrides)
    return {key.lstrip("+~"): value for key, sep, value in pairs if sep}


def command_line(overrides: Sequence[str]) -> str:
    """The job as a single run: without hparams_search=, which would start the search again."""
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") != "hparams_search"]
    return " ".join(["python -m lettucify", *map(shlex.quote, kept)])


def job_folders(sweep_dir: Path) -> List[Path]:
    """The sweep's job folders: those Hydra or the job wrote into, in job order."""
    found = [p for p in sweep_dir.iterdir() if p.is_dir() and ((p / RESULT_FILE).is_file() or (p / ".hydra").is_dir())]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def read_job(folder: Path, objective: str) -> JobResult:
    result = JobResult.read(folder)
    if result is not None:
        return result
    try:
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        overrides = []
    num = int(folder.name) if folder.name.isdigit() else -1
    return JobResult(num=num, overrides=overrides, status=FAILED, objective=objective,
                     error=f"no {RESULT_FILE}: the job stopped before it ended; see the log in {folder}")


def collect(sweep_dir: Path, objective: str, maximize: bool) -> Summary:
    jobs = [(read_job(folder, objective), folder) for folder in job_folders(sweep_dir)]
    sign = -1.0 if maximize else 1.0
    jobs.sort(key=lambda job: (job[0].status != COMPLETED or job[0].value is None,
                               sign * job[0].value if job[0].value is not None else 0.0, job[0].num))
    rows = [row for row, _ in jobs]
    keyed = [override_map(r.overrides) for r in rows]
    values: Dict[str, set] = {}
    for overrides in keyed:
        for key, value in overrides.items():
            values.setdefault(key, set()).add(value)
    swept = [key for key in values if len(values[key]) > 1 or any(key not in k for k in keyed)]
    return Summary(rows, objective, maximize, sorted(swept), [folder for _, folder in jobs])


def _number(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.4g}"


def write_csv(summary: Summary, path: Path) -> None:
    metric_keys = sorted({key for row in summary.rows for key in row.metrics})
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["rank", "job", "status", summary.objective, *summary.swept, *metric_keys, "error", "overrides"])
        for rank, row in enumerate(summary.rows, 1):
            swept = override_map(row.overrides)
            writer.writerow([
                rank if row.status == COMPLETED else "", row.num, row.status,
                "" if row.value is None else row.value, *(swept.get(k, "") for k in summary.swept),
                *(row.metrics.get(k, "") for k in metric_keys), row.error or "", " ".join(row.overrides),
            ])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(summary: Summary) -> Tuple[List[str], List[List[str]]]:
    """The summary's table: its header and one row of cells per job, best first."""
    shown = [k for k in SHOWN_METRICS if k != summary.objective and any(k in r.metrics for r in summary.rows)]
    header = ["rank", "job", "status", summary.objective, *summary.swept, *shown, "error"]
    cells = []
    for rank, row in enumerate(summary.rows, 1):
        swept = override_map(row.overrides)
        cells.append([str(rank) if row.status == COMPLETED else "", str(row.num), row.status, _number(row.value),
                      *(swept.get(k, "") for k in summary.swept), *(_number(row.metrics.get(k)) for k in shown),
                      row.error or ""])
    return header, cells


def markdown(summary: Summary, sweep_dir: Path) -> str:
    direction = "maximized" if summary.maximize else "minimized"
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(summary.rows)} jobs: {len(summary.completed)} completed, {len(summary.failed)} failed. "
        f"Objective: `{summary.objective}`, {direction}.",
        "",
    ]
    best = summary.best
    if best is not None:
        lines += [f"Best: job {best.num}, {summary.objective} = {_number(best.value)}. To rerun it:", "",
                  "```bash", command_line(best.overrides), "```", ""]
    header, rows = table(summary)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    swept_columns = range(4, 4 + len(summary.swept))
    for cells in rows:
        cells = [f"`{cell}`" if i in swept_columns and cell else cell for i, cell in enumerate(cells)]
        lines.append("| " + " | ".join(map(_cell, cells)) + " |")
    if summary.swept and summary.completed:
        lines += ["", f"![{summary.objective} against each swept value]({PLOT_FILE})"]
    return "\n".join(lines) + "\n"


def _as_number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def plot(summary: Summary, path: Path) -> bool:
    """The objective against each swept value, one panel each; False when there is nothing to plot."""
    rows = summary.completed
    if not summary.swept or not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summary.swept), figsize=(4 * len(summary.swept), 3.5), squeeze=False)
    for ax, key in zip(axes[0], summary.swept):
        labels = [override_map(r.overrides).get(key, "(default)") for r in rows]
        ys = [r.value for r in rows]
        numbers = [_as_number(label) for label in labels]
        if all(n is not None for n in numbers):
            ax.scatter(numbers, ys)
            if min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
                ax.set_xscale("log")
        else:  # categories, in first-seen order
            order = list(dict.fromkeys(labels))
            ax.scatter([order.index(label) for label in labels], ys)
            ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(summary.objective)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def write_summary(sweep_dir: Path, objective: str, maximize: bool) -> tuple:
    """Collect the jobs and write the summary files; returns (summary, the files written)."""
    summary = collect(sweep_dir, objective, maximize)
    files = [sweep_dir / CSV_FILE, sweep_dir / MARKDOWN_FILE]
    write_csv(summary, files[0])
    files[1].write_text(markdown(summary, sweep_dir))
    if plot(summary, sweep_dir / PLOT_FILE):
        files.append(sweep_dir / PLOT_FILE)
    files.append(write_report(summary, sweep_dir))
    return summary, files


def write_report(summary: Summary, sweep_dir: Path) -> Path:
    """``report.html``: the table (each job linked to its report), the best command, the plot."""
    from lettucify.evaluate.html import REPORT_FILE, embedded_image, relative_link, render, write_html

    header, rows = table(summary)
    links = [relative_link(folder / REPORT_FILE, sweep_dir) if (folder / REPORT_FILE).is_file() else None
             for folder in summary.folders]
    best = summary.best
    text = render(
        "sweep.html", sweep_dir=sweep_dir, summary=summary, header=header, rows=list(zip(rows, links, summary.rows)),
        swept_columns=range(4, 4 + len(summary.swept)), best_command=command_line(best.overrides) if best else None,
        best=best, plot=embedded_image(sweep_dir / PLOT_FILE), completed=COMPLETED,
    )
    return write_html(sweep_dir / REPORT_FILE, text)
