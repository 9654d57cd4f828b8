"""Speech-to-text task examples from a corpus manifest: ASR, spoken QA, speech translation.

An :class:`Example` is one (audio, instruction) → reference item. Every manifest row gives one ASR and
one AST example, and one SQA example per question about its sentence. Columns that rewards read
(``reference``, ``keywords``, ``language``) travel with the example.

``language`` is the language the reference is written in: English for ASR and spoken QA; for AST the
row's ``language`` (the translation's target, a code such as ``de`` — set by
:func:`speechrl.data.sources.load_rows`), else Spanish, the synthetic corpus's. The AST instruction
names it (``"Translate the audio into German."``; :data:`LANGUAGE_NAMES`, else the code as written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["asr", "sqa", "ast"]
TASKS = ("asr", "sqa", "ast")

INSTRUCTIONS = {
    "asr": "Transcribe the audio.",
    "ast": "Translate the audio into {language}.",
    "sqa": "Answer the question about the audio: {question}",
}
LANGUAGE = {"asr": "en", "sqa": "en", "ast": "es"}
"""Each task's reference language when the row names none (AST: the synthetic corpus's Spanish)."""
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "ca": "Catalan", "zh": "Chinese",
                  "ja": "Japanese", "ar": "Arabic", "fa": "Persian", "tr": "Turkish", "et": "Estonian",
                  "mn": "Mongolian", "sv": "Swedish", "lv": "Latvian", "sl": "Slovenian", "ta": "Tamil",
                  "id": "Indonesian", "cy": "Welsh"}
"""Names of the common translation targets (every CoVoST 2 language), by code (``zh-CN`` → ``zh``)."""


def language_name(language: str) -> str:
    """The English name of a language code (``de``, ``sv-SE``, ``zh_CN``), or ``language`` as written."""
    return LANGUAGE_NAMES.get(language.strip().lower().replace("_", "-").split("-")[0], language.strip())


@dataclass
class Example:
    id: str
    utterance_id: str
    task: str
    instruction: str
    reference: str
    keywords: list[str] = field(default_factory=list)
    language: str = "en"
    split: str = "train"
    voice: str = ""
    duration: float = 0.0
    audio: str = ""

    def columns(self) -> dict[str, Any]:
        """The per-sample columns a reward function receives (TRL convention)."""
        return {"reference": self.reference, "keywords": self.keywords, "language": self.language}


def task_examples(rows: list[dict[str, Any]], task: str, max_questions: int | None = None) -> list[Example]:
    """Examples of ``task`` for manifest ``rows`` (order kept)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    out = []
    for r in rows:
        language = (r.get("language") or LANGUAGE[task]) if task == "ast" else LANGUAGE[task]
        common = dict(utterance_id=r["id"], task=task, keywords=list(r.get("keywords", [])), language=language,
                      split=r["split"], voice=r.get("voice", ""), duration=r.get("duration", 0.0), audio=r["audio"])
        if task == "asr":
            out.append(Example(id=f"{r['id']}/asr", instruction=INSTRUCTIONS["asr"], reference=r["text"], **common))
        elif task == "ast":
            instruction = INSTRUCTIONS["ast"].format(language=language_name(language))
            out.append(Example(id=f"{r['id']}/ast", instruction=instruction, reference=r["translation"], **common))
        else:
            for k, qa in enumerate(r.get("questions", [])[:max_questions]):
                out.append(Example(id=f"{r['id']}/sqa{k}", instruction=INSTRUCTIONS["sqa"].format(question=qa["question"]),
                                   reference=qa["answer"], **common))
    return out


def reward_columns(examples: list[Example]) -> dict[str, list[Any]]:
    """Column-wise reward kwargs for a batch: ``{"reference": [...], "keywords": [...], ...}``."""
    cols = [e.columns() for e in examples]
    return {k: [c[k] for c in cols] for k in cols[0]} if cols else {}
