"""What every reward shares: TRL's calling convention and its per-sample columns.

A reward is called as ``reward(prompts=..., completions=..., **columns)``, where every column is a
list with one entry per completion (the trainer repeats a prompt's row for each of its G samples).
TRL adds a few keyword arguments of its own (``completion_ids``, ``trainer_state``,
``log_metric``…); rewards take them through ``**columns`` and ignore them.

Completions may be plain strings or, in TRL's conversational format, a list of messages
(``[{"role": "assistant", "content": "..."}]``): the text of the last message is scored.
A text column entry of ``None`` (a missing value in a 🤗 dataset) is read as ``""``.

The reference-overlap rewards accept several references per sample: ``references`` (a list of accepted
wordings per sample, e.g. a spoken-QA answer said three ways) when given, else ``reference``
(:func:`reference_lists`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def reward(name: str, low: float, high: float) -> Callable[[Callable], Callable]:
    """Tag a reward function with its ``name`` and documented ``value_range`` = (low, high)."""

    def tag(fn: Callable) -> Callable:
        fn.name = name
        fn.value_range = (low, high)
        return fn

    return tag


def _message_text(message: Any) -> str:
    content = message.get("content", "") if isinstance(message, dict) else message
    if isinstance(content, list):  # multimodal content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """Plain text of each completion (a string, or a conversational list of messages)."""
    if isinstance(completions, str):
        raise TypeError("completions must be a list with one entry per sample, got a single str")
    texts = []
    for i, c in enumerate(completions):
        if c is None:
            texts.append("")
        elif isinstance(c, str):
            texts.append(c)
        elif isinstance(c, (list, tuple)):
            texts.append(_message_text(c[-1]) if c else "")
        else:
            raise TypeError(f"completion {i} is {type(c).__name__}; expected str or a message list")
    return texts


def text_column(values: Sequence[Any] | None, name: str, n: int) -> list[str]:
    """A per-sample text column as ``n`` strings; clear errors for a missing or ragged column."""
    if values is None:
        raise ValueError(f"this reward needs the per-sample column {name!r}")
    if isinstance(values, str):
        raise TypeError(f"column {name!r} must be a list with one entry per sample, got a str")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} entries for {n} completions")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append("")
        elif isinstance(v, str):
            out.append(v)
        else:
            raise TypeError(f"column {name!r} entry {i} is {type(v).__name__}, expected str")
    return out


def list_column(values: Sequence[Any] | None, name: str, n: int) -> list[list[str]]:
    """A per-sample list-of-strings column (e.g. ``keywords``); a bare str is one item."""
    if values is None:
        raise ValueError(f"this reward needs the per-sample column {name!r}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} entries for {n} completions")
    out = []
    for i, v in enumerate(values):
        items = [] if v is None else [v] if isinstance(v, str) else list(v)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"column {name!r} entry {i} holds {type(item).__name__}, "
                                "expected str")
        out.append(items)
    return out


def reference_lists(reference: Sequence[Any] | None, references: Sequence[Any] | None, n: int) -> list[list[str]]:
    """Each sample's references: its ``references`` entry (a list of accepted wordings) when that column is
    given and the entry is not empty, else ``[reference]``."""
    many = list_column(references, "references", n) if references is not None else [[] for _ in range(n)]
    if all(many):
        return many
    one = text_column(reference, "reference", n)
    return [refs or [ref] for refs, ref in zip(many, one)]
