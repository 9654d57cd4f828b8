"""The ``speechrl`` command line.

    speechrl corpus build --out DIR [--size N] [--seed S] [--set key=value ...]
    speechrl audio scan FOLDER --out DIR [--sample-rate HZ]
    speechrl run RECIPE.yaml --out DIR [--set key=value ...] [--dry-run] [--resume-anyway] [--threads N]
    speechrl demo --out DIR [--recipe NAME] [--resume-anyway] [--threads N] [--jobs N]
    speechrl report RUN_DIR [--max-samples N]

Every command writes into ``--out``: the resolved ``config.yaml``, ``metrics.jsonl`` and
``summary.json`` (``run`` and ``demo`` also ``run.json``: code version, threads, inputs;
:mod:`speechrl.runfolder`). ``--help-config`` lists every config key with its type, default and meaning.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from speechrl import config as C
from speechrl.runlog import MetricsLogger


def _add_common(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    p.add_argument("--out", type=Path, required=out_required, help="output folder (created)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set speeds=[1.0] (repeatable)")
    p.add_argument("--help-config", action="store_true",
                   help="list the config keys with the values this command would use, and exit")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume-anyway", action="store_true",
                   help="reuse the stages in --out even though they come from other settings (recorded in "
                        "run.json and the summary)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (default: $OMP_NUM_THREADS, else the free cores, at most 4)")


def cmd_corpus_build(args: argparse.Namespace) -> dict:
    from speechrl.corpus.build import CorpusConfig, build_corpus

    base = {k: v for k, v in {"size": args.size, "seed": args.seed}.items() if v is not None}
    cfg = C.load(CorpusConfig, args.config, args.overrides, base=base)
    args.out.mkdir(parents=True, exist_ok=True)
    C.save(cfg, args.out / "config.yaml")
    summary = build_corpus(cfg, args.out)
    MetricsLogger(args.out, tensorboard=False).log(summary, step=0, stage="corpus")
    return summary


SCAN_HELP = """Load every audio file under FOLDER the way training does; each bad one goes to
--out/rejected.jsonl with its reason. Every entry under FOLDER is accounted for: files named as audio
(.wav .flac .ogg .mp3 .aiff .aif .au .opus .sph .w64 .caf, and headerless .raw/.pcm) are loaded or
rejected, whatever they are (a folder named x.wav is rejected as a directory); entries that are neither
folder nor regular file (dangling links, pipes) are rejected; other files are not audio and only
counted, by extension, in summary.json's "other_files"; unreadable folders are rejected. Links to
folders are followed, each folder once. A missing FOLDER is an error (exit 2)."""


def _existing_folder(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {'not a folder' if path.exists() else 'no such folder'}")
    return path


def cmd_audio_scan(args: argparse.Namespace) -> dict:
    """Load every audio file under a folder the way training does; record the bad ones."""
    from speechrl.audio import SAMPLE_RATE, RejectLog, iter_audio, scan_folder
    from speechrl.runlog import write_json

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rejected.jsonl").unlink(missing_ok=True)
    rejects = RejectLog(args.out)
    scan = scan_folder(args.folder)
    for folder, reason in scan.unreadable:
        rejects.add(folder, reason, stage="scan")
    loaded = [len(wav) for _, wav in iter_audio(scan.audio, rejects, raw_sample_rate=args.sample_rate)]
    summary = {"files": len(scan.audio), "loaded": len(loaded), "rejected": len(rejects),
               "other_files": scan.other, "seconds": round(sum(loaded) / SAMPLE_RATE, 2)}
    for item in rejects.items[:20]:  # each bad entry once, as text
        print(f"rejected: {item.path}: {item.reason}", file=sys.stderr)
    if len(rejects) > 20:
        print(f"rejected: … {len(rejects) - 20} more in {rejects.path}", file=sys.stderr)
    write_json(args.out / "summary.json", summary)
    MetricsLogger(args.out, tensorboard=False).log(summary, step=0, stage="audio_scan")
    return summary


def cmd_run(args: argparse.Namespace) -> dict | None:
    from speechrl.pipelines import dry_run, read_recipe, run_recipe

    pipeline, recipe = read_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(dry_run(pipeline, recipe, args.out, args.resume_anyway))
        return None
    summary = run_recipe(pipeline, recipe, args.out, args.resume_anyway, _threads(args))
    _write_report(args.out)
    return summary


def _threads(args: argparse.Namespace) -> int:
    """torch's thread count for the run: ``--threads``, else :func:`speechrl.parallel.default_threads`
    (set before any work, recorded in ``run.json``)."""
    from speechrl.parallel import default_threads

    if args.threads is not None and args.threads < 1:
        raise C.ConfigError(f"--threads: {args.threads} is out of range; must be >= 1")
    return args.threads or default_threads()


def _write_report(run_dir: Path) -> None:
    """Every run ends with its report; a report failure is logged, never loses the run's results."""
    from speechrl.report import write_report

    try:
        print(f"report: {write_report(run_dir)}", file=sys.stderr)
    except Exception as err:  # noqa: BLE001 — the summary is already on disk
        print(f"report: not written ({type(err).__name__}: {err})", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> dict:
    """The main job: every recipe family at demo scale → DIR/summary.json, DIR/report.html."""
    from speechrl.pipelines import demo

    jobs = args.jobs if args.jobs is not None else demo.default_jobs(len(args.recipe or demo.FAMILIES))
    threads = _threads(args) if args.threads or jobs == 1 else 1  # side by side: one thread each
    summary = demo.run(args.out, args.recipe or None, args.overrides, args.resume_anyway, threads, jobs)
    _write_report(args.out)
    print(demo.describe(summary), file=sys.stderr)
    return summary


def cmd_report(args: argparse.Namespace) -> dict:
    """Write RUN_DIR/report.html: config, test metrics, curves, samples with audio."""
    from speechrl.report import write_report

    return {"report": str(write_report(args.run_dir, max_samples=args.max_samples))}


CONFIGS = {"corpus build": "speechrl.corpus.build:CorpusConfig"}


def _demo_families() -> list[str]:
    from speechrl.pipelines.demo import FAMILIES

    return list(FAMILIES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechrl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="the offline spoken corpus").add_subparsers(dest="action", required=True)
    build = corpus.add_parser("build", help="synthesize the corpus into --out")
    _add_common(build)
    build.add_argument("--size", type=int, help="approximate number of utterances")
    build.add_argument("--seed", type=int, help="random seed")
    build.add_argument("--config", type=Path, help="YAML file with corpus config keys")
    build.set_defaults(func=cmd_corpus_build, config_name="corpus build")

    audio = sub.add_parser("audio", help="audio utilities").add_subparsers(dest="action", required=True)
    scan = audio.add_parser("scan", help="load every audio file under FOLDER; bad ones go to --out/rejected.jsonl",
                            description=SCAN_HELP)
    scan.add_argument("folder", type=_existing_folder)
    scan.add_argument("--out", type=Path, required=True, help="output folder (created)")
    scan.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                      help="sample rate of headerless .raw/.pcm files (16-bit mono PCM); without it they are "
                           "rejected")
    scan.set_defaults(func=cmd_audio_scan, config_name=None)

    run = sub.add_parser("run", help="run a recipe end to end")
    run.add_argument("recipe", type=Path, help="recipe YAML (see recipes/)")
    _add_common(run)
    _add_run_options(run)
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and which stages would run or be reused, and exit")
    run.set_defaults(func=cmd_run, config_name="run")

    demo = sub.add_parser("demo", help="run the offline end-to-end demo (every recipe family at demo scale)")
    _add_common(demo)
    _add_run_options(demo)
    demo.add_argument("--recipe", action="append", default=[], metavar="NAME",
                      help="run only this family (repeatable): " + ", ".join(_demo_families()))
    demo.add_argument("--jobs", type=int, metavar="N",
                      help="families run side by side, each in its own process with one torch thread unless "
                           "--threads says otherwise (default: all of them on a machine with 2 or more cores; "
                           "1: one after another in this process)")
    demo.set_defaults(func=cmd_demo, config_name=None)

    report = sub.add_parser("report", help="write RUN_DIR/report.html (a run folder or a folder of runs)")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("--max-samples", type=int, default=12, help="samples shown per table (default 12)")
    report.set_defaults(func=cmd_report, config_name=None)
    return parser


def _config_lines(args: argparse.Namespace) -> list[str]:
    """Every config key with the value this command would run with (its ``--set`` overrides applied) and
    the class default beside it where they differ."""
    if args.command == "demo":  # each family's recipe keys (settable with --set for all families)
        from speechrl.pipelines.demo import FAMILIES, recipe_for

        return [line for name in (args.recipe or FAMILIES)
                for line in [f"# {name} ({FAMILIES[name].pipeline})",
                             *C.describe(recipe_for(name, args.overrides)[1])]]
    if args.config_name == "run":
        from speechrl.pipelines import read_recipe

        return C.describe(read_recipe(args.recipe, args.overrides)[1])
    module, name = CONFIGS[args.config_name].split(":")
    cls = getattr(importlib.import_module(module), name)
    base = {k: v for k, v in {"size": args.size, "seed": args.seed}.items() if v is not None}
    return C.describe(C.load(cls, args.config, args.overrides, base=base))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    try:
        if "--help-config" in argv:
            args, _ = build_parser().parse_known_args([a for a in argv if a != "--help-config"] + ["--out", "."])
            print("\n".join(_config_lines(args)))
            return 0
        args = build_parser().parse_args(argv)
        summary = args.func(args)
    except C.ConfigError as err:
        print(f"speechrl: config error: {err}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
