"""Speech-to-text task examples from a corpus manifest: ASR, spoken QA, speech translation.

An :class:`Example` is one (audio, instruction) → reference item. Every manifest row gives one ASR and
one AST example, and one SQA example per question about its sentence. Columns that rewards read
(``reference``, ``keywords``, ``language``) travel with the example.

A spoken-QA row whose question carries ``answers`` (several accepted wordings of a one-sentence answer:
the synthetic corpus with ``corpus.qa_answers: sentence``) gives an example with all of them as its
``references`` — what the BLEU reward and the evaluation score against (multi-reference BLEU) — and one
of them as its ``reference``, the SFT target: a choice seeded by the example's id (:func:`pick_wording`),
so the training targets cover every wording and a rerun picks the same. A question with only its
``answer`` gives that answer as both.

``language`` is the language the reference is written in: English for ASR and spoken QA; for AST the
row's ``language`` (the translation's target, a code such as ``de`` — set by
:func:`speechrl.data.sources.load_rows`), else Spanish, the synthetic corpus's. The AST instruction
names it (``"Translate the audio into German."``; :data:`LANGUAGE_NAMES`, else the code as written).
"""

from __future__ import annotations

import zlib
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
    references: list[str] = field(default_factory=list)  # every accepted wording (empty: just ``reference``)

    @property
    def all_references(self) -> list[str]:
        """The references the reward and the evaluation score against: ``references``, else ``[reference]``."""
        return list(self.references) or [self.reference]

    def columns(self) -> dict[str, Any]:
        """The per-sample columns a reward function receives (TRL convention); ``references``: all of
        :attr:`all_references` (multi-reference rewards read it; ``reference`` is the training target)."""
        return {"reference": self.reference, "references": self.all_references, "keywords": self.keywords,
                "language": self.language}


def pick_wording(example_id: str, wordings: list[str]) -> str:
    """One of ``wordings`` for the example ``example_id``, chosen by a CRC-32 of the id: the same on every
    run and machine, spread evenly over the wordings across examples."""
    return wordings[zlib.crc32(example_id.encode()) % len(wordings)]


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
                qid, wordings = f"{r['id']}/sqa{k}", list(qa.get("answers") or [])
                out.append(Example(id=qid, instruction=INSTRUCTIONS["sqa"].format(question=qa["question"]),
                                   reference=pick_wording(qid, wordings) if wordings else qa["answer"],
                                   references=wordings, **common))
    return out


def reward_columns(examples: list[Example]) -> dict[str, list[Any]]:
    """Column-wise reward kwargs for a batch: ``{"reference": [...], "keywords": [...], ...}``."""
    cols = [e.columns() for e in examples]
    return {k: [c[k] for c in cols] for k in cols[0]} if cols else {}
