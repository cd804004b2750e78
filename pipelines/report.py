"""``autolabel report RUN_DIR``: one self-contained HTML page (plus PNGs) for a finished or partial run.

For every stage folder with a ``manifest.json``: its status and time, its metrics as a table, the figures it lists
(``manifest["figures"]``: GAN samples, label overlays, uncertainty maps, cluster galleries...) and its training curves
(drawn from ``logs/metrics.csv``). Every picture is copied into ``report/`` (``report/figures/<stage>_<name>``) and
linked by a path inside it, so the folder can be moved, zipped or mailed on its own.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any

from autolabel.engine.io import atomic_write_text, read_json
from autolabel.errors import DataError
from autolabel.viz import plot_curves

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;font-size:.9em}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:.8em;color:#555}
img{max-width:100%;image-rendering:pixelated;border:1px solid #eee} .meta{color:#666;font-size:.85em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(rows: dict[str, Any]) -> str:
    scal = {k: v for k, v in rows.items() if isinstance(v, (int, float, str, bool))}
    if not scal:
        return ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{_fmt(v)}</td></tr>" for k, v in scal.items())
    return f"<table>{body}</table>"


def _rows_table(rows: dict[str, dict]) -> str:
    cols: list[str] = []
    for v in rows.values():
        cols += [c for c in v if isinstance(v[c], (int, float, str)) and c not in cols]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = ""
    for name, row in rows.items():
        cells = "".join(f"<td class=num>{_fmt(row[c]) if c in row else ''}</td>" for c in cols)
        body += f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _nested_tables(metrics: dict[str, Any]) -> str:
    """Scalars as one key/value table; a dict of dicts (e.g. per-method results) as a rows x metrics table."""
    out = _table({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    for k, v in metrics.items():
        if not isinstance(v, dict) or not v:
            continue
        out += f"<h3>{html.escape(k)}</h3>"
        if all(isinstance(x, dict) for x in v.values()):
            out += _rows_table(v)
        else:
            out += _nested_tables(v)
    return out


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN_DIR/report/report.html`` (+ curve PNGs) and return its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run directory not found: {run} -- pass a folder under runs/<name>/<timestamp>/")
    stages = sorted(
        (p for p in run.iterdir() if (p / "manifest.json").is_file()),
        key=lambda p: read_json(p / "manifest.json").get("finished", ""),
    )
    if not stages:
        raise DataError(f"{run} holds no finished stage (no */manifest.json); run a pipeline or command into it first")
    out_dir = run / "report"
    out_dir.mkdir(exist_ok=True)
    fig_dir = out_dir / "figures"
    shutil.rmtree(fig_dir, ignore_errors=True)  # pictures of stages rerun since the last report
    fig_dir.mkdir()
    parts = [f"<h1>autolabel report: {html.escape(run.name)}</h1><p class=meta>{html.escape(str(run.resolve()))}</p>"]
    summary = run / "summary.json"
    if summary.is_file():
        parts.append("<h2>Headline metrics</h2>" + _nested_tables(read_json(summary)))
    for sdir in stages:
        m = read_json(sdir / "manifest.json")
        parts.append(
            f"<h2>{html.escape(sdir.name)}</h2><p class=meta>{html.escape(m.get('status', '?'))}, "
            f"{m.get('seconds', 0):.1f}s, finished {html.escape(m.get('finished', ''))}</p>"
        )
        if m.get("metrics"):
            parts.append(_nested_tables(m["metrics"]))
        captions = {str(k): str(v) for k, v in (m.get("captions") or {}).items()}
        figs: list[tuple[Path, str]] = []
        for f in m.get("figures", []):
            src = Path(f)
            if src.is_file():  # a copy inside report/: the page must not point into stage folders
                dst = fig_dir / f"{sdir.name}_{src.name}"
                shutil.copy2(src, dst)
                figs.append((dst, captions.get(str(f), src.stem)))
        # the stage's own training curves, and those of sub-runs (e.g. downstream/synthetic, downstream/real_few) and
        # their phases (downstream/finetuned/pretrain, .../finetune)
        logs = [sorted(sdir.glob(f"{'*/' * depth}logs/metrics.csv")) for depth in range(3)]
        for csv_path in [p for level in logs for p in level]:
            sub = csv_path.parent.parent.relative_to(sdir).as_posix()
            name = sdir.name if sub == "." else f"{sdir.name}_{sub.replace('/', '_')}"
            curve = plot_curves(csv_path, out_dir / f"{name}_curves.png", title=f"{name} training")
            if curve is not None:
                figs.append((curve, curve.stem))
        for f, caption in figs:
            rel = f.relative_to(out_dir).as_posix()
            parts.append(
                f"<figure><img src='{html.escape(rel)}' alt='{html.escape(f.stem)}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    page = f"<!doctype html><html><head><meta charset=utf-8><title>autolabel report</title><style>{_CSS}</style></head>"
    page += "<body>" + "\n".join(parts) + "</body></html>\n"
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
