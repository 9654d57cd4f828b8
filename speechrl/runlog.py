"""What every command leaves in ``--out``: resolved config, ``metrics.jsonl``, ``summary.json``.

Files are written atomically (temp file in the same folder + ``os.replace``) so a crash never leaves
a half-written summary or config behind. TensorBoard events are written too when it is installed, and
Weights & Biases receives the same records when configured: ``WANDB_PROJECT`` set in the environment
and ``pip install wandb`` (``WANDB_MODE=offline`` keeps the run on disk). A resumed run continues the
same W&B run (its id is kept in ``<out>/wandb_id.txt``).

``metrics.jsonl`` is appended to, one line per record. A process killed mid-write can leave a last
line without its newline: :func:`read_metrics` skips that fragment, and a :class:`MetricsLogger`
opened on the file (the resumed run) cuts it off before appending. A resumed run logs again the steps
after its checkpoint, so a step can appear twice; the later record is the one that counts.

Secrets never reach a file written here: :func:`write_json` (and ``speechrl.config.save``) replace
the value of every key that names a credential (see :func:`is_secret_name`) by ``"<redacted>"``.
API keys are read from the environment at the point of use, never stored in a config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null keeps files parseable by every reader
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


REDACTED = "<redacted>"
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "credential")
_TOKENIZER_TOKENS = ("pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token",
                     "mask_token")


def is_secret_name(name: str) -> bool:
    """Whether a key holds a credential: its name contains ``api_key``/``apikey``/``secret``/
    ``password``/``credential``, or is ``token`` / ends in ``_token`` (``hf_token``,
    ``access_token``; not a tokenizer's ``pad_token``, nor ``max_new_tokens``). A name ending in
    ``_env`` holds the *name* of an environment variable, which is not secret."""
    name = name.lower()
    if name.endswith("_env"):
        return False
    if any(word in name for word in _SECRET_WORDS):
        return True
    return (name == "token" or name.endswith("_token")) and not name.endswith(_TOKENIZER_TOKENS)


def redact_secrets(data: Any) -> Any:
    """A copy of plain data with every non-empty string under a secret key (see
    :func:`is_secret_name`, at any depth) replaced by ``"<redacted>"``."""
    if isinstance(data, dict):
        return {k: REDACTED if is_secret_name(str(k)) and isinstance(v, str) and v else redact_secrets(v)
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_secrets(v) for v in data]
    return data


def write_json(path: str | Path, data: Any) -> Path:
    """Atomic, sorted, NaN/inf as null, secrets redacted."""
    return atomic_write_text(path, json.dumps(redact_secrets(_jsonable(data)), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class MetricsLogger:
    """Appends one JSON line per step to ``metrics.jsonl`` (and TensorBoard when available). Under a
    multi-process launch only rank 0 writes (trainers log values already reduced over the ranks)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, wandb: bool = True):
        self.enabled = int(os.environ.get("RANK", "0")) == 0
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        _drop_partial_last_line(self.path)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except Exception:  # tensorboard not installed: JSONL is the record
                self._tb = None
        # wandb=False: a second process appending to the same run folder (one W&B run has one writer)
        self._wandb = self._start_wandb() if wandb and self.enabled and os.environ.get("WANDB_PROJECT") else None

    def _start_wandb(self) -> Any:
        try:
            import wandb
        except ImportError:
            logging.getLogger(__name__).warning("WANDB_PROJECT is set but wandb is not installed (pip install "
                                                "wandb): logging to metrics.jsonl only")
            return None
        id_file = self.out_dir / "wandb_id.txt"
        if not id_file.is_file():
            atomic_write_text(id_file, uuid.uuid4().hex[:12])
        return wandb.init(project=os.environ["WANDB_PROJECT"], id=id_file.read_text().strip(), resume="allow",
                          name=self.out_dir.resolve().name, dir=str(self.out_dir))

    def log(self, metrics: dict[str, Any], step: int | None = None, stage: str | None = None) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3)}
        if stage is not None:
            row["stage"] = stage
        if step is not None:
            row["step"] = step
        row.update(metrics)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(row), sort_keys=False) + "\n")
        if self._tb is not None and step is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{stage}/{k}" if stage else k, v, step)
        if self._wandb is not None:  # stages restart their step count: W&B keeps its own, ours is a metric
            prefix = f"{stage}/" if stage else ""
            self._wandb.log({f"{prefix}{k}": v for k, v in {**metrics, "step": step}.items()
                             if isinstance(v, (int, float)) and v is not None and math.isfinite(v)})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that lacks its newline (a writer killed mid-line), so appends start clean."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_jsonl(path: str | Path) -> list[Any]:
    """Records of a JSON-lines file. A last line without its newline that does not parse (cut off
    by a kill or a full disk) is skipped; any other bad line, or bytes that are not UTF-8, raise
    ValueError naming the file and the line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte {data[err.start]:#04x} at offset "
                         f"{err.start})") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines):  # no newline after it: a partial record from a killed writer
                break
            raise ValueError(f"{path}:{i}: not a JSON line ({err})") from None
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` ([] when there is none); see :func:`read_jsonl`."""
    path = Path(path)
    return read_jsonl(path) if path.is_file() else []
