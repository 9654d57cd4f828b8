"""The run report: one self-contained ``RUN_DIR/report.html`` built from what a run folder holds.

    write_report(run_dir, max_samples=12) -> Path        # also: speechrl report RUN_DIR

Every part is optional: what exists is rendered, a missing or unreadable file is left out (with a
note when it was expected), never an error. A run folder may hold

- ``config.yaml`` / ``config.json``: the resolved config, shown verbatim in a ``<details>`` block;
- ``summary.json`` ``metrics``: ``{system: {metric: value}}`` on the held-out test split → a table
  (rows = systems, columns = metrics, each system's change against the baseline) and before/after
  bars. The baseline is ``summary["baseline"]`` when given, else the first of ``sft``, ``base``,
  ``baseline``, ``round0``, ``initial`` present, else the first system. Lower is better for
  ``wer``, ``cer``, ``genppl``, ``auto_bleu``, ``nll`` and ``loss`` (as words of the metric name;
  :func:`speechrl.eval.metrics.lower_is_better`), higher for the rest.
  An unfinished run without ``summary.json`` falls back to ``metrics_test.json`` (same layout).
  ``summary.json`` ``intervals`` (``{system: {metric: {"diff", "low", "high", "significant"}}}``, the
  paired bootstrap 95% interval of the system's difference to the baseline,
  :mod:`speechrl.eval.bootstrap`; nested per family like ``metrics`` in a demo summary) puts
  ``[low, high]`` beside each change; a change whose interval holds 0 is shown uncoloured, marked "n.s."
  (not significant);
- ``metrics.jsonl`` (:class:`speechrl.runlog.MetricsLogger` rows with ``stage`` and ``step``) →
  curves, one line per stage: loss; ``reward`` and each reward component (``rewards/<name>_mean``
  with its ``_std`` band, ``reward/<name>``, ``reward_<name>``); KL; ``dev_*`` metrics; the other
  scalars logged at two or more steps;
- ``samples/*.jsonl`` → sample tables with audio players, in one of the two schemas below.

A folder of runs (a demo: ``DIR/<family>/...``) gets one section per run folder found in it, up to two
levels down, after its own. Its top-level ``summary.json`` may nest ``metrics`` one level more,
``{family: {system: {metric: value}}}``; that gives one overview table per family.

Audio is copied into ``RUN_DIR/report_files/`` (rebuilt on every call) and referenced by relative
paths, so the folder can be moved as a whole; a missing or unreadable audio file is skipped with a
note. Plots are base64 PNGs inside the page; the page has no scripts.

Sample schemas (``samples/<name>.jsonl``, one JSON object a line)
------------------------------------------------------------------
1. **One file per system** (what :func:`speechrl.pipelines.common.write_samples` writes, file stem =
   system name)::

       {"id": "s1-00-piper-joe/asr", "audio": "/abs/or/relative.wav", "voice": "piper-joe",
        "instruction": "Transcribe the audio.", "reference": "...", "hypothesis": "..."}

   The files are joined on ``id`` into one table, hypotheses side by side, each scored against the
   reference: sentence WER (:func:`speechrl.text.sentence_wer`) when the run's task is ``asr`` or
   its metrics have ``wer``, else sentence BLEU × 100 (:func:`speechrl.rewards.bleu`).

2. **Several systems in one row** (any family: Align-SLM continuations, TTS outputs, ...)::

       {"id": "p1",
        "prompt_audio": "prompt.wav", "prompt_text": "the text or instruction",  # optional
        "reference": "...",                                                    # optional
        "score_name": "WER",                            # optional label; sets the better direction
        "systems": {"base":   {"audio": "base/p1.wav", "text": "...", "score": 0.31},
                    "round2": {"audio": "r2/p1.wav",   "text": "...", "score": 0.12}}}

   Every field but ``id`` and ``systems`` is optional, as is every field of a system entry. The
   file gives its own table, titled by its stem.

Audio paths are absolute or relative to the samples file's folder, the run folder or the report's
folder (tried in that order).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from speechrl.eval.metrics import LOWER_IS_BETTER, lower_is_better
from speechrl.runlog import atomic_write_text

__all__ = ["write_report", "lower_is_better", "LOWER_IS_BETTER"]

BASELINE_NAMES = ("sft", "base", "baseline", "round0", "initial")
RUN_FILES = ("summary.json", "metrics.jsonl", "metrics_test.json", "config.yaml", "config.json")
SKIP_DIRS = {"report_files", "samples", "tb", "audio", "__pycache__"}
FILES_DIR = "report_files"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ border-bottom: 2px solid #ddd; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.better {{ color: #107a10; }} .worse {{ color: #b00020; }} .ns {{ color: #666; }} .best {{ font-weight: 600; }}
.delta {{ font-size: 0.85em; }} .meta, .note {{ color: #666; }}
.missing {{ color: #b00020; font-size: 0.9em; display: block; }}
pre {{ background: #f7f7f7; padding: 0.8em; overflow-x: auto; }}
img {{ max-width: 100%; }} audio {{ width: 220px; height: 32px; display: block; }}
td.sample {{ max-width: 320px; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 0.5em 1.5em; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-weight: 600; margin: 0.3em 0; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="meta">{meta}</p>
{toc}
{body}
</body></html>
"""


def write_report(run_dir: str | Path, max_samples: int = 12) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/report_files/``) and return its path."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder {root}")
    files = _AudioFiles(root)
    runs = _run_dirs(root)
    sections = [_section(root, d, files, max_samples) for d in runs]
    if not sections:
        sections = [f'<p class="note">No run files ({", ".join(RUN_FILES)}, samples/) in {_e(root)}.</p>']
    toc = ""
    if len(runs) > 1:
        links = (f'<li><a href="#{_anchor(root, d)}">{_e(_name(root, d))}</a></li>' for d in runs)
        toc = f"<ul>{''.join(links)}</ul>"
    meta = f"{_e(root.resolve())} · {len(runs)} run folder(s)"
    page = PAGE.format(title=f"speechrl report: {_e(root.resolve().name)}", meta=meta, toc=toc,
                       body="\n".join(sections))
    return atomic_write_text(root / "report.html", page)


# --- finding runs -----------------------------------------------------------------------------------

def _is_run(d: Path) -> bool:
    """A run folder holds one of :data:`RUN_FILES` or ``samples/``; ``config.json`` alone does not count,
    since Hugging Face model folders (checkpoints) hold one."""
    return any((d / f).is_file() for f in RUN_FILES if f != "config.json") or (d / "samples").is_dir()


def _run_dirs(root: Path, depth: int = 2) -> list[Path]:
    """``root`` if it is a run, then every run folder below it (depth-first, sorted, ``depth`` levels)."""
    found = [root] if _is_run(root) else []
    if depth > 0:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if sub.name not in SKIP_DIRS and not sub.name.startswith("."):
                found += _run_dirs(sub, depth - 1)
    return found


def _name(root: Path, d: Path) -> str:
    return root.resolve().name if d == root else d.relative_to(root).as_posix()


def _anchor(root: Path, d: Path) -> str:
    return "run-" + re.sub(r"[^A-Za-z0-9_-]+", "-", _name(root, d)).strip("-") if d != root else "run-root"


# --- one run ----------------------------------------------------------------------------------------

def _section(root: Path, d: Path, files: "_AudioFiles", max_samples: int) -> str:
    notes: list[str] = []
    summary = _read_json(d / "summary.json", notes)
    summary = summary if isinstance(summary, dict) else {}
    metrics = summary.get("metrics")
    source = "summary.json"
    if not isinstance(metrics, dict) and (d / "metrics_test.json").is_file():
        metrics, source = _read_json(d / "metrics_test.json", notes), "metrics_test.json (run not finished)"
    parts = [f'<section id="{_anchor(root, d)}"><h2>{_e(_name(root, d))}</h2>']
    for cfg in ("config.yaml", "config.json"):
        if (d / cfg).is_file():
            text = (d / cfg).read_text(encoding="utf-8", errors="replace")
            parts.append(f"<details><summary>Resolved config ({cfg})</summary><pre>{_e(text)}</pre></details>")
            break

    tables = _metric_tables(metrics if isinstance(metrics, dict) else {})
    for title, table in tables:
        baseline = _baseline(summary, list(table))
        heading = "Held-out test metrics" + (f": {title}" if title else "")
        intervals = _intervals(summary, title)
        ci_note = ("; [low, high]: paired bootstrap 95% interval of the change (test items resampled), "
                   "n.s.: it holds 0" if intervals else "")
        parts.append(f"<h3>{_e(heading)}</h3><p class=\"note\">from {_e(source)}; baseline "
                     f"<b>{_e(baseline)}</b>; ↓ lower is better, ↑ higher is better; best per column in bold"
                     f"{ci_note}</p>")
        parts.append(_metrics_table(table, baseline, intervals))
        parts.append(_img(_plot(_bars, notes, table, baseline), f"test metrics {title}"))

    rows, bad = _read_jsonl(d / "metrics.jsonl")
    if bad:
        notes.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    curves = _plot(_curves, notes, rows) or []
    if curves:
        figures = [f"<figure><figcaption>{_e(title)}</figcaption>{_img(png, title)}</figure>"
                   for title, png in curves if title != OTHER]
        parts.append(f'<h3>Training curves</h3><div class="plots">{"".join(figures)}</div>')
        parts += [f"<details><summary>{_e(title)}</summary>{_img(png, title)}</details>"
                  for title, png in curves if title == OTHER]

    task = summary.get("task") or _task_from_config(d)
    metric_names = {m for _, table in tables for per_system in table.values() for m in per_system}
    samples = _sample_tables(d, files, max_samples, task, metric_names, notes)
    for title, table_html in samples:
        parts.append(f"<h3>Samples: {_e(title)}</h3>{table_html}")

    rest = {k: v for k, v in summary.items() if k != "metrics"}
    if rest:
        parts.append(f"<details><summary>Summary (other fields)</summary><pre>"
                     f"{_e(json.dumps(rest, indent=2, sort_keys=True))}</pre></details>")
    if not (tables or curves or samples):
        notes.append("no metrics, curves or samples yet")
    parts += [f'<p class="note">Note: {_e(n)}</p>' for n in dict.fromkeys(notes)]
    return "\n".join(parts) + "</section>"


def _task_from_config(d: Path) -> str | None:
    cfg = d / "config.yaml"
    if cfg.is_file():
        m = re.search(r"^task:\s*(\w+)", cfg.read_text(encoding="utf-8", errors="replace"), re.M)
        return m.group(1) if m else None
    return None


def _read_json(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        notes.append(f"{path.name} unreadable: {err}")
        return None


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Rows of a JSONL file and the number of lines that were not JSON objects (a crash mid-write)."""
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


# --- metrics table and bars -------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _metric_tables(metrics: dict) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """``{system: {metric: v}}`` → one untitled table; ``{family: {system: {metric: v}}}`` → one per family."""
    def flat(d: dict) -> dict[str, dict[str, float]]:
        return {s: {k: v for k, v in m.items() if _is_num(v)} for s, m in d.items()
                if isinstance(m, dict) and any(_is_num(v) for v in m.values())}

    if flat(metrics):
        return [("", flat(metrics))]
    return [(fam, flat(sub)) for fam, sub in metrics.items() if isinstance(sub, dict) and flat(sub)]


def _intervals(summary: dict, family: str) -> dict:
    """``summary["intervals"]`` of a run (``family`` ""), or of one family of a demo summary."""
    found = summary.get("intervals")
    if family and isinstance(found, dict):
        found = found.get(family)
    return found if isinstance(found, dict) else {}


def _interval_html(ci: Any) -> str:
    """`` [low, high]`` (+ ``n.s.``) of an interval entry, "" when it is not one."""
    if not isinstance(ci, dict) or not (_is_num(ci.get("low")) and _is_num(ci.get("high"))):
        return ""
    return f" [{_signed(ci['low'])}, {_signed(ci['high'])}]" + ("" if ci.get("significant") else " n.s.")


def _signed(x: float) -> str:
    return f"{'+' if x >= 0 else '−'}{_fmt(abs(x))}"


def _baseline(summary: dict, systems: list[str]) -> str:
    given = summary.get("baseline")
    if isinstance(given, str) and given in systems:
        return given
    return next((n for n in BASELINE_NAMES if n in systems), systems[0])


def _ordered(systems: list[str], baseline: str) -> list[str]:
    return [baseline] + [s for s in systems if s != baseline]


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def _metrics_table(table: dict[str, dict[str, float]], baseline: str, intervals: dict | None = None) -> str:
    systems = _ordered(list(table), baseline)
    columns = list(dict.fromkeys(m for s in systems for m in table[s]))
    head = "".join(f"<th>{_e(m)} {'↓' if lower_is_better(m) else '↑'}</th>" for m in columns)
    out = [f"<table class=\"metrics\"><tr><th>system</th>{head}</tr>"]
    for s in systems:
        cells = []
        for m in columns:
            v = table[s].get(m)
            if v is None:
                cells.append("<td>–</td>")
                continue
            sign = -1 if lower_is_better(m) else 1
            values = [table[x][m] for x in systems if m in table[x]]
            cls = "best" if len(set(values)) > 1 and sign * v == max(sign * x for x in values) else ""
            base = table[baseline].get(m)
            delta = ""
            if s != baseline and base is not None:
                d = v - base
                tone = "better" if sign * d > 0 else "worse" if sign * d < 0 else ""
                per_system = (intervals or {}).get(s)
                ci = per_system.get(m) if isinstance(per_system, dict) else None
                ci_html = _interval_html(ci)
                if ci_html and not ci.get("significant"):
                    tone = "ns"
                delta = f' <span class="delta {tone}">({_signed(d)}{ci_html})</span>'
            cells.append(f'<td class="num {cls}">{_fmt(v)}{delta}</td>')
        label = f"{_e(s)} (baseline)" if s == baseline else _e(s)
        out.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    return "".join(out) + "</table>"


# --- plots ------------------------------------------------------------------------------------------

def _figure(n: int, title: str | None = None):
    from matplotlib.figure import Figure  # no pyplot: no global backend state in the caller's process

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.4 * cols, 2.3 * rows + (0.3 if title else 0)), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _plot(make, notes: list[str], *args):
    """``make(*args)``, or None with a note when plotting fails: a bad plot never costs the report."""
    try:
        return make(*args)
    except Exception as err:
        notes.append(f"plot {make.__name__} failed: {type(err).__name__}: {err}")
        return None


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(png: str | None, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">' if png else ""


def _color(name: str, names: list[str]) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    return palette[names.index(name) % len(palette)]


def _bars(table: dict[str, dict[str, float]], baseline: str) -> str | None:
    systems = _ordered(list(table), baseline)
    metrics = list(dict.fromkeys(m for s in systems for m in table[s]))[:12]
    if not metrics:
        return None
    fig, axes = _figure(len(metrics), "held-out test: baseline vs systems")
    for ax, m in zip(axes, metrics):
        names = [s for s in systems if m in table[s]]
        ax.bar(range(len(names)), [table[s][m] for s in names], color=[_color(s, systems) for s in names])
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(f"{m} ({'lower' if lower_is_better(m) else 'higher'} is better)", fontsize=9)
    return _png(fig)


CURVE_SKIP = {"time", "step", "stage"}
OTHER = "Other training scalars"


def _curve_group(key: str) -> str | None:
    if key.endswith("_std") or key.startswith("test_"):
        return None
    if "invalid" in key:
        return OTHER
    if key == "reward" or re.match(r"rewards?[/_]", key):
        return "Reward and reward components"
    if "loss" in key:
        return "Loss"
    if key == "kl" or re.search(r"(^|[/_])kl($|[/_])", key):
        return "KL"
    if key.startswith("dev_"):
        return "Dev metrics"
    return OTHER


def _curves(rows: list[dict]) -> list[tuple[str, str]]:
    """One figure per group (loss, reward, KL, dev, other): a panel per key, a line per stage."""
    series: dict[str, Any] = {}
    for r in rows:
        if not _is_num(r.get("step")):
            continue
        stage = str(r.get("stage", "run"))
        for k, v in r.items():
            if k not in CURVE_SKIP and _is_num(v):
                series.setdefault(k, {}).setdefault(stage, {})[r["step"]] = v  # a resumed run re-logs steps: last wins
    series = {k: {st: sorted(points.items()) for st, points in by.items()} for k, by in series.items()}
    if "reward" in series:  # the weighted total is the logged reward already
        series.pop("rewards/total_mean", None)
    std = {k[: -len("_std")]: v for k, v in series.items() if k.endswith("_std")}
    groups: dict[str, list[str]] = {}
    for k, by_stage in series.items():
        group = _curve_group(k)
        if group and sum(len(p) for p in by_stage.values()) >= 2:
            groups.setdefault(group, []).append(k)
    stages = list(dict.fromkeys(str(r.get("stage", "run")) for r in rows if _is_num(r.get("step"))))
    out = []
    for group in ("Loss", "Reward and reward components", "KL", "Dev metrics", OTHER):
        keys = groups.get(group, [])[:12]
        if not keys:
            continue
        fig, axes = _figure(len(keys))
        for ax, k in zip(axes, keys):
            for stage, points in series[k].items():
                xs, ys = zip(*points)
                color = _color(stage, stages)
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, color=color, label=stage)
                band = dict(std.get(k.removesuffix("_mean"), {}).get(stage, []))
                if band and k.endswith("_mean"):
                    lo = [y - band.get(x, 0.0) for x, y in points]
                    hi = [y + band.get(x, 0.0) for x, y in points]
                    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
            ax.set_title(re.sub(r"^rewards?[/_]|_mean$", "", k) if group.startswith("Reward") else k, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            if len(series[k]) > 1:
                ax.legend(fontsize=7)
        out.append((group, _png(fig)))
    return out


# --- samples ----------------------------------------------------------------------------------------

class _AudioFiles:
    """Copies referenced audio into ``root/report_files/`` once per source file; returns relative srcs."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / FILES_DIR
        if self.dir.is_dir():
            shutil.rmtree(self.dir)  # rebuilt each time: no stale copies of old samples
        self.copied: dict[Path, str] = {}

    def src(self, path: Any, search: list[Path]) -> tuple[str | None, str]:
        """``(relative src, "")`` for a readable audio file, ``(None, reason)`` otherwise."""
        if not isinstance(path, str) or not path:
            return None, "no audio path"
        p = Path(path)
        found = next((c for c in ([p] if p.is_absolute() else [s / p for s in search] + [p]) if c.is_file()), None)
        if found is None:
            return None, f"audio missing: {path}"
        found = found.resolve()
        if found not in self.copied:
            import soundfile as sf

            try:
                if sf.info(str(found)).frames <= 0:
                    return None, f"audio empty: {path}"
            except Exception as err:  # not audio / truncated: say so, keep the report
                return None, f"audio unreadable: {path} ({type(err).__name__})"
            key = hashlib.sha1(str(found).encode()).hexdigest()[:8]
            dest = self.dir / f"{key}-{found.name}"
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, dest)
            self.copied[found] = f"{FILES_DIR}/{dest.name}"
        return self.copied[found], ""


def _scorer(task: str | None, metric_names: set[str]):
    """(label, score(ref, hyp), lower is better) for per-system sample files."""
    if task == "asr" or (task is None and ("wer" in metric_names or not metric_names)):
        from speechrl.text import sentence_wer

        return "WER", sentence_wer, lower_is_better("wer")
    from speechrl.rewards import bleu

    def sentence_bleu(ref: str | list[str], hyp: str) -> float:  # a list: the sample's accepted references
        return 100.0 * bleu(None, [hyp], references=[[ref] if isinstance(ref, str) else ref])[0]

    return "BLEU", sentence_bleu, lower_is_better("bleu")


def _sample_tables(d: Path, files: _AudioFiles, max_samples: int, task: str | None, metric_names: set[str],
                   notes: list[str]) -> list[tuple[str, str]]:
    folder = d / "samples"
    if not folder.is_dir():
        return []
    per_system: dict[str, list[dict]] = {}
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        rows, bad = _read_jsonl(path)
        if bad:
            notes.append(f"samples/{path.name}: {bad} unreadable line(s) skipped")
        if any(isinstance(r.get("systems"), dict) for r in rows):
            samples = [r for r in rows if isinstance(r.get("systems"), dict)][:max_samples]
            name = next((r["score_name"] for r in samples if isinstance(r.get("score_name"), str)), "score")
            out.append((path.stem, _render_samples(samples, name, lower_is_better(name), [path.parent, d, files.root],
                                                   files, notes)))
        elif any("hypothesis" in r for r in rows):
            per_system[path.stem] = [r for r in rows if "hypothesis" in r]
        elif rows:
            notes.append(f"samples/{path.name}: rows have neither 'systems' nor 'hypothesis'; not shown")
    if per_system:
        label, score, lower = _scorer(task, metric_names)
        systems = _ordered(list(per_system), _baseline({}, list(per_system)))
        joined: dict[str, dict] = {}
        for s in systems:
            for r in per_system[s]:
                key = str(r.get("id", len(joined)))
                row = joined.setdefault(key, {"id": key, "prompt_audio": r.get("audio"), "voice": r.get("voice"),
                                              "prompt_text": r.get("instruction"), "reference": r.get("reference"),
                                              "systems": {}})
                hyp, ref = str(r.get("hypothesis") or ""), row["reference"]
                refs = r.get("references") if label == "BLEU" and isinstance(r.get("references"), list) else None
                row["systems"][s] = {"text": hyp, "score": score(refs or str(ref), hyp)
                                     if isinstance(ref, str) else None}
        samples = list(joined.values())[:max_samples]
        out.insert(0, (f"{', '.join(systems)} (score: sentence {label})",
                       _render_samples(samples, label, lower, [folder, d, files.root], files, notes)))
    return out


def _audio_cell(path: Any, search: list[Path], files: _AudioFiles, notes: list[str]) -> str:
    if not path:
        return ""
    src, why = files.src(path, search)
    if src is None:
        notes.append(why)
        return f'<span class="missing">{_e(why)}</span>'
    return f'<audio controls preload="metadata" src="{_e(src)}"></audio>'


def _render_samples(samples: list[dict], score_name: str, lower: bool, search: list[Path], files: _AudioFiles,
                    notes: list[str]) -> str:
    systems = list(dict.fromkeys(s for r in samples for s in r["systems"]))
    has_ref = any(r.get("reference") for r in samples)
    head = "<th>id</th><th>input</th>" + ("<th>reference</th>" if has_ref else "")
    head += "".join(f"<th>{_e(s)}</th>" for s in systems)
    out = [f'<p class="note">{len(samples)} sample(s); {_e(score_name)} {"lower" if lower else "higher"} is '
           f'better, best per row in bold</p><table class="samples"><tr>{head}</tr>']
    for r in samples:
        entries = {s: e for s, e in r["systems"].items() if isinstance(e, dict)}
        scores = [e["score"] for e in entries.values() if _is_num(e.get("score"))]
        best = (min if lower else max)(scores) if len(set(scores)) > 1 else None  # no winner in a tie
        sub = f'<br><span class="note">{_e(r["voice"])}</span>' if r.get("voice") else ""
        cells = [f"<td>{_e(r.get('id', ''))}{sub}</td>",
                 f'<td class="sample">{_audio_cell(r.get("prompt_audio"), search, files, notes)}'
                 f'{_e(r.get("prompt_text") or "")}</td>']
        if has_ref:
            cells.append(f'<td class="sample">{_e(r.get("reference") or "")}</td>')
        for s in systems:
            e = entries.get(s, {})
            score = e.get("score")
            score_html = ""
            if _is_num(score):
                cls = " best" if best is not None and score == best else ""
                score_html = f'<br><span class="delta{cls}">{_e(score_name)} {_fmt(score)}</span>'
            cells.append(f'<td class="sample">{_audio_cell(e.get("audio"), search, files, notes)}'
                         f'{_e(e.get("text") or "")}{score_html}</td>')
        out.append(f"<tr>{''.join(cells)}</tr>")
    return "".join(out) + "</table>"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)
