"""The run report: structure of report.html on a real (small) run folder, robustness to partial and
nested folders, and the page as headless Chromium renders it (no console errors, audio playable)."""

import base64
import json
import os
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechrl.cli import main
from speechrl.report import lower_is_better, write_report
from speechrl.runlog import MetricsLogger, write_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[1]


def tone(path: Path, freq: float, seconds: float = 0.3, sr: int = 16000) -> str:
    t = np.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return str(path)


def make_asr_run(out: Path, corpus: Path) -> Path:
    """A speech-GRPO-shaped run folder: config, per-step metrics of three stages, summary, samples."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text("task: asr\ngrpo:\n  beta: 0.04\n"
                                     "  rewards: {accuracy_wer: 1.0, hallucination: 1.0}\n")
    log = MetricsLogger(out, tensorboard=False)
    for step in range(1, 9):
        log.log({"loss": 3.0 / step, "lr": 1e-4}, step=step, stage="sft")
        if step % 4 == 0:
            log.log({"dev_wer": 0.5 - 0.02 * step, "dev_cer": 0.3 - 0.01 * step}, step=step, stage="sft")
    for step in range(1, 7):
        log.log({"reward": 0.2 + 0.05 * step, "rewards/accuracy_wer_mean": 0.3 + 0.05 * step,
                 "rewards/accuracy_wer_std": 0.1, "rewards/hallucination_mean": -0.1 / step,
                 "rewards/hallucination_std": 0.05, "rewards/total_mean": 0.2 + 0.05 * step, "kl": 0.01 * step,
                 "loss": 0.1 - 0.01 * step, "clip_frac_high": 0.0, "completion_len": 9.0 + step},
                step=step, stage="grpo")
    log.log({"test_wer": 0.3}, stage="sft")  # no step: not a curve point
    summary = {"task": "asr", "test_size": 6, "wall_s": 12.5,
               "metrics": {"sft": {"wer": 0.3, "cer": 0.2}, "grpo": {"wer": 0.25, "cer": 0.22},
                           "sft_extra": {"wer": 0.29, "cer": 0.19}}, "baseline": "sft",
               "intervals": {"grpo": {"wer": {"diff": -0.05, "low": -0.08, "high": -0.02, "significant": True},
                                      "cer": {"diff": 0.02, "low": -0.01, "high": 0.05, "significant": False}}}}
    write_json(out / "summary.json", summary)
    refs = ["the red fox runs home", "anna finds a blue key", "tom walks to the old mill",
            "a small boat sails away", "the baker sells warm bread", "my friend reads a book"]
    hyps = {"sft": ["the red fox run home", "anna find a blue key", "tom walks to old mill",
                    "a small boat sails way", "the baker sells bread", "my friend reads the book"],
            "grpo": refs[:4] + ["the baker sells warm bread", "my friend read a book"],
            "sft_extra": ["the red fox runs home", "anna finds blue key"] + refs[2:]}
    for system, texts in hyps.items():
        rows = [{"id": f"u{i}/asr", "audio": tone(corpus / f"u{i}.wav", 220 + 40 * i), "voice": "piper-joe",
                 "instruction": "Transcribe the audio.", "reference": ref, "hypothesis": hyp}
                for i, (ref, hyp) in enumerate(zip(refs, texts))]
        (out / "samples").mkdir(exist_ok=True)
        (out / "samples" / f"{system}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def make_generic_samples(out: Path, n: int = 3) -> None:
    """Align-SLM-style continuations in the generic schema (relative audio paths), one of them missing."""
    rows = []
    for i in range(n):
        rows.append({"id": f"p{i}", "prompt_audio": tone(out / "prompts" / f"p{i}.wav", 300 + 50 * i),
                     "prompt_text": f"once upon a time {i}", "score_name": "judge",
                     "systems": {"base": {"audio": f"gen/base/p{i}.wav", "text": "and then", "score": 0.4},
                                 "round2": {"audio": f"gen/round2/p{i}.wav", "text": "and so on", "score": 0.7}}})
        tone(out / "gen" / "base" / f"p{i}.wav", 500 + 20 * i)
        if i:  # p0 of round2 was never written
            tone(out / "gen" / "round2" / f"p{i}.wav", 700 + 20 * i)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "samples" / "continuations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.audio, self.images, self.tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.text = "".join(page.text)
    return page


@pytest.fixture
def run_folder(tmp_path):
    run = make_asr_run(tmp_path / "run", tmp_path / "corpus")
    make_generic_samples(run)
    return run


def test_direction_of_metrics():
    assert lower_is_better("wer") and lower_is_better("test_cer") and lower_is_better("unit_roundtrip_wer")
    assert lower_is_better("auto_bleu") and lower_is_better("genppl")
    assert not lower_is_better("bleu") and not lower_is_better("answer_accuracy") and not lower_is_better("meteor")


def test_report_structure(run_folder):
    path = write_report(run_folder)
    assert path == run_folder / "report.html"
    html = path.read_text(encoding="utf-8")
    page = parse(path)
    assert page.tags.count("table") >= 3  # metrics, joined per-system samples, generic samples
    assert "<summary>Resolved config (config.yaml)</summary>" in html and "beta: 0.04" in page.text
    # metrics table: direction marks, baseline first, deltas coloured by direction
    assert "wer ↓" in page.text and "sft (baseline)" in page.text
    # with the paired bootstrap interval of the change: significant keeps its colour, one holding 0 is n.s.
    assert '<span class="delta better">(−0.05 [−0.08, −0.02])</span>' in html  # grpo WER 0.30 → 0.25
    assert '<span class="delta ns">(+0.02 [−0.01, +0.05] n.s.)</span>' in html  # grpo CER 0.20 → 0.22
    assert '<span class="delta better">(−0.01)</span>' in html  # sft_extra WER: no interval given
    assert "paired bootstrap 95% interval" in page.text
    # curves (loss, reward components, KL, dev, other) and test bars, as embedded PNGs
    assert len(page.images) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Loss", "Reward and reward components", "KL", "Dev metrics"):
        assert f"<figcaption>{title}</figcaption>" in html
    assert "<summary>Other training scalars</summary>" in html
    # samples: hypotheses side by side with sentence WER; audio copied next to the report
    assert "the red fox run home" in page.text and "WER 0.2" in page.text
    assert len(page.audio) >= 10
    for src in page.audio:
        assert src.startswith("report_files/")
        wav, sr = sf.read(run_folder / src)
        assert sr == 16000 and len(wav) > 1000
    assert "audio missing: gen/round2/p0.wav" in page.text


def test_report_caps_samples_and_is_rebuilt(run_folder):
    write_report(run_folder, max_samples=2)
    page = parse(run_folder / "report.html")
    assert len(page.audio) == 2 + 2 * 3 - 1  # 2 joined rows; 2 generic rows × 3 players, one missing
    assert len(list((run_folder / "report_files").iterdir())) == len(set(page.audio))


def test_folder_of_runs_and_partial_runs(tmp_path):
    demo = tmp_path / "demo"
    make_asr_run(demo / "speech_grpo", tmp_path / "corpus")
    make_generic_samples(demo / "align_slm")  # samples only: no config, metrics or summary
    (demo / "tts").mkdir()
    (demo / "tts" / "config.json").write_text('{"steps": 3}')
    (demo / "tts" / "metrics.jsonl").write_text('{"step": 1, "stage": "grpo", "loss": 1.0}\n{"step": 2, "sta')
    (demo / "tts" / "summary.json").write_text("{not json")
    (demo / "tts" / "sft").mkdir()  # a stage folder, not a run
    (demo / "tts" / "sft" / "result.json").write_text("{}")
    write_json(demo / "summary.json", {"metrics": {"speech_grpo": {"sft": {"wer": 0.3}, "grpo": {"wer": 0.25}},
                                                   "align_slm": {"base": {"genppl": 40.0, "auto_bleu": 0.1},
                                                                 "round2": {"genppl": 35.0, "auto_bleu": 0.12}}},
                                       "intervals": {"align_slm": {"round2": {"genppl": {
                                           "diff": -5.0, "low": -9.0, "high": 1.5, "significant": False}}}}})
    page = parse(write_report(demo))
    for name in ("speech_grpo", "align_slm", "tts"):
        assert f"#run-{name}" in (demo / "report.html").read_text()
    assert "#run-tts-sft" not in (demo / "report.html").read_text()
    assert "Held-out test metrics: align_slm" in page.text and "genppl ↓" in page.text
    assert "(−5 [−9, +1.5] n.s.)" in page.text  # a demo summary nests the intervals per family
    assert "metrics.jsonl: 1 unreadable line(s) skipped" in page.text
    assert "summary.json unreadable" in page.text and '"steps": 3' in page.text
    assert all((demo / src).is_file() for src in page.audio)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No run files" in parse(write_report(empty)).text


def test_cli_report(run_folder, capsys):
    assert main(["report", str(run_folder), "--max-samples", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(run_folder / "report.html")}


PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window ? "load failed: " + (t.currentSrc || t.src || t.tagName) : "js: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () {
      errors.push(level + ": " + Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments);
    };
  });
  function settle(a) {
    return new Promise(function (done) {
      if (a.readyState >= 1 || a.error) return done();
      a.addEventListener("loadedmetadata", done); a.addEventListener("error", done); setTimeout(done, 5000);
    });
  }
  window.addEventListener("load", function () {
    var audios = Array.prototype.slice.call(document.querySelectorAll("audio"));
    Promise.all(audios.map(settle)).then(function () {
      var result = {errors: errors,
        audio: audios.map(function (a) {
          return {src: a.getAttribute("src"), readyState: a.readyState, duration: a.duration,
                  error: a.error ? a.error.code : null}; }),
        images: Array.prototype.map.call(document.images, function (i) {
          return {ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth}; })};
      var pre = document.createElement("pre"); pre.id = "report-probe"; pre.textContent = JSON.stringify(result);
      document.body.appendChild(pre);
    });
  });
})();
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_in_headless_chromium(run_folder, tmp_path):
    """A test-only copy of the page carries a probe script that records every JS error, console
    error/warning and failed resource load (capture-phase ``error`` listener), waits for each <audio>
    to load its metadata, and writes the result into the DOM, which ``--dump-dom`` returns. Chromium's
    own console log (``:CONSOLE`` lines on stderr) must be empty too; the report itself has no scripts."""
    report = write_report(run_folder)
    probe = report.with_name("report_probe.html")
    probe.write_text(report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    run = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "profile")
    found = re.search(r'<pre id="report-probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"probe did not report; chromium rc={run.returncode} stderr tail: {run.stderr[-2000:]}"
    result = json.loads(unescape(found.group(1)))
    assert result["errors"] == []
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert len(result["audio"]) >= 10
    for audio in result["audio"]:
        assert audio["error"] is None and audio["readyState"] >= 1 and audio["duration"] > 0.2, audio
    assert result["images"] and all(img["ok"] for img in result["images"])

    if os.environ.get("SPEECHRL_SCREENSHOT"):
        shot = REPO / "docs" / "report_screenshot.png"
        shot.parent.mkdir(exist_ok=True)
        chromium(f"--screenshot={shot}", "--window-size=1400,2200", "--virtual-time-budget=3000", report.as_uri(),
                 profile=tmp_path / "profile")
        assert shot.is_file() and shot.stat().st_size > 10_000
