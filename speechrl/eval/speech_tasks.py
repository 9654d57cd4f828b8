"""Held-out evaluation of speech-to-text policies: greedy decoding, then task metrics.

Every text is compared in its reference's language (each :class:`~speechrl.data.tasks.Example`'s
``language``: English for ASR and spoken QA, the row's target language for translation — Spanish on the
synthetic corpus) through :func:`speechrl.text.normalize_for_scoring`, the normaliser the rewards use
too. ASR: corpus ``wer``/``cer`` (jiwer), the word error rate split into
``substitution_rate``/``deletion_rate``/``insertion_rate`` (each per reference word), and the
``hallucination_rate``: the share of hypotheses Tongyi's hallucination check flags (a decoding loop,
content not in the audio, the wrong language; :class:`speechrl.rewards.asr.Hallucination`). Spoken QA / translation:
corpus ``bleu`` (sacreBLEU, 13a, on normalised text), ``bleu_sacre`` (sacreBLEU's own 13a tokenisation
on the raw, case-sensitive text: the number papers report), mean sentence ``rouge_l``, ``meteor`` and
``semantic_similarity`` (MiniLM cosine). :func:`task_item_stats` gives the per-item statistics of the
headline metrics (ASR ``wer``/``cer``, else ``bleu``), from which :mod:`speechrl.eval.bootstrap`
recomputes them on resampled items.

An item may have several references (a spoken-QA answer in several accepted wordings: the example's
``all_references``): BLEU is then sacreBLEU's multi-reference corpus BLEU (a variable number of
references per item: the missing ones are ``None``), and the sentence metrics take the best reference
(rewards' ``references`` column). ASR scores against the first reference.
"""

from __future__ import annotations

from typing import Any, Sequence

import sacrebleu
import torch
from tqdm import tqdm

from speechrl.data.tasks import LANGUAGE, Example
from speechrl.eval.bootstrap import bleu_stats, error_stats
from speechrl.models.policy import PromptBatch, completion_mask, decode
from speechrl.text import cer, normalize_for_scoring, wer, word_errors

def batches(items: list[Any], size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def prompt_batch(examples: list[Example], feats: dict[str, dict]) -> PromptBatch:
    return PromptBatch([feats[e.utterance_id] for e in examples], [e.instruction for e in examples])


@torch.no_grad()
def predict(policy: Any, examples: list[Example], feats: dict[str, dict], max_new_tokens: int,
            batch_size: int = 32, desc: str = "decode") -> list[str]:
    """Greedy hypotheses for ``examples`` (in order)."""
    was_training = policy.training
    policy.eval()
    out: list[str] = []
    for chunk in tqdm(list(batches(examples, batch_size)), desc=desc, unit="batch", leave=False):
        ids = policy.generate(policy.encode(prompt_batch(chunk, feats)), max_new_tokens=max_new_tokens)
        out.extend(decode(policy.tokenizer, ids, completion_mask(ids, policy.eos_token_id)))
    policy.train(was_training)
    return out


def _normalized(texts: list[str], languages: list[str]) -> list[str]:
    return [normalize_for_scoring(t, language) for t, language in zip(texts, languages, strict=True)]


References = Sequence["str | Sequence[str]"]  # per item: its reference, or its accepted references


def reference_lists(refs: References) -> list[list[str]]:
    """Each item's references as a list (a bare string is one reference)."""
    return [[r] if isinstance(r, str) else list(r) for r in refs]


def reference_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacreBLEU's reference streams (stream k: every item's k-th reference, ``None`` where it has fewer)."""
    width = max((len(r) for r in refs), default=1)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def scoring_references(examples: list[Example]) -> list[str | list[str]]:
    """What an example is scored against: its accepted ``references`` when it has several, else its
    ``reference``."""
    return [e.all_references if len(e.all_references) > 1 else e.reference for e in examples]


def task_metrics(task: str, hyps: list[str], refs: References, semantic: bool = True,
                 languages: list[str] | None = None) -> dict[str, float]:
    """The task's metrics (module doc); ``refs``: each item's reference or list of accepted references;
    ``languages``: each item's reference language (default: the task's,
    :data:`~speechrl.data.tasks.LANGUAGE`)."""
    language = LANGUAGE.get(task)
    ref_lists = reference_lists(refs)
    if task == "asr":
        refs = [r[0] for r in ref_lists]
        from speechrl.rewards.asr import hallucination

        words = word_errors(refs, hyps, language=language)
        per_word = max(words.ref_units, 1)
        flagged = [h < 0 for h in hallucination(None, hyps, reference=refs)]
        return {"wer": round(wer(refs, hyps, language=language), 4),
                "cer": round(cer(refs, hyps, language=language), 4),
                "substitution_rate": round(words.substitutions / per_word, 4),
                "deletion_rate": round(words.deletions / per_word, 4),
                "insertion_rate": round(words.insertions / per_word, 4),
                "hallucination_rate": round(sum(flagged) / max(1, len(flagged)), 4)}
    from speechrl.rewards import embedding_similarity, meteor, rouge_l

    languages = languages or [language] * len(hyps)
    normalized = [_normalized(rs, [lang] * len(rs)) for rs, lang in zip(ref_lists, languages, strict=True)]
    bleu = sacrebleu.corpus_bleu(_normalized(hyps, languages), reference_streams(normalized)).score
    metrics = {"bleu": round(bleu, 2),
               "bleu_sacre": round(sacrebleu.corpus_bleu(hyps, reference_streams(ref_lists)).score, 2),
               "rouge_l": round(_mean(rouge_l(None, hyps, references=ref_lists, language=languages)), 4),
               "meteor": round(_mean(meteor(None, hyps, references=ref_lists, language=languages)), 4)}
    if semantic:
        metrics["semantic_similarity"] = round(_mean(embedding_similarity(None, hyps, references=ref_lists)), 4)
    return metrics


def task_item_stats(task: str, hyps: list[str], refs: References,
                    languages: list[str] | None = None) -> dict[str, list[list[float]]]:
    """Per test item, the sufficient statistics of the task's headline metrics as :func:`task_metrics`
    reports them: ASR ``wer``/``cer`` edit counts, else ``bleu`` segment statistics of the normalised
    texts (see :mod:`speechrl.eval.bootstrap`); ``refs`` and ``languages`` as there."""
    ref_lists = reference_lists(refs)
    if task == "asr":
        language = LANGUAGE.get(task)
        firsts = [r[0] for r in ref_lists]
        return {"wer": error_stats(firsts, hyps, language=language).tolist(),
                "cer": error_stats(firsts, hyps, "char", language).tolist()}
    languages = languages or [LANGUAGE[task]] * len(hyps)
    normalized = [_normalized(rs, [lang] * len(rs)) for rs, lang in zip(ref_lists, languages, strict=True)]
    return {"bleu": bleu_stats(_normalized(hyps, languages), normalized).tolist()}


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(1, len(xs))


def evaluate(policy: Any, examples: list[Example], feats: dict[str, dict], task: str, max_new_tokens: int,
             batch_size: int = 32, semantic: bool = True, desc: str = "evaluate") -> tuple[dict[str, float], list[str]]:
    hyps = predict(policy, examples, feats, max_new_tokens, batch_size, desc=desc)
    return task_metrics(task, hyps, scoring_references(examples), semantic, [e.language for e in examples]), hyps
