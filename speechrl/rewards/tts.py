"""TTS rewards (Tongyi TTS GRPO, arXiv 2509.18569) and the renderer stage they score.

The renderer is the TTS counterpart of the ASR encoder stage: speech units → vocoder → 16 kHz audio →
transcriber → text (:class:`UnitRenderer`). The trainer renders a batch once; the rewards then see the
transcripts as ``completions`` and per-sample columns, with the one reward signature of
:mod:`speechrl.rewards`:

| name | what | range |
|---|---|---|
| R1 ``accuracy_wer`` / ``tanh_wer`` | 1 − WER / 1 − tanh(3·WER) of the transcript (:mod:`speechrl.rewards.asr`) | [−1, 1] / [0, 1] |
| R2 ``tts_duration`` | −\\|len − median_g(len)\\| / median_g(len), median over the sample's group (``seconds``, ``group``) | (−∞, 0] |
| R3 ``tts_diversity`` | mean normalised token edit distance to the other samples of the group (``speech_tokens``, ``group``) | [0, 1] |

``group`` is a per-sample group id (the G samples of one prompt share it). Pitch-std diversity is not
implemented.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from speechrl.rewards.batch import completion_texts, reward

__all__ = ["UnitRenderer", "evaluation_renderer", "tts_duration", "tts_diversity", "TTS_REWARDS"]


class UnitRenderer:
    """Speech units → audio (``vocoder``, default Piper) → transcripts (``transcriber``, default
    Whisper tiny.en, batched). Both are built lazily on first use and may be given as objects.

    ``remember``: transcripts are kept per unit sequence, and a sequence heard before is not transcribed
    again (its audio, rendered deterministically, is the same). An evaluation of an RL system whose greedy
    outputs mostly equal its SFT model's then transcribes only the ones that changed. The transcriber
    should not depend on its batch (Whisper with ``batch_size=1``, as :func:`evaluation_renderer` builds
    it), so a remembered transcript is what a fresh transcription would give."""

    def __init__(self, vocoder: Any = "piper", transcriber: Any = "whisper-tiny", remember: bool = False):
        self._vocoder, self._transcriber = vocoder, transcriber
        self._heard: dict[tuple, str] | None = {} if remember else None

    @property
    def vocoder(self):
        if isinstance(self._vocoder, str):
            from speechrl.speech.vocoder import make_vocoder

            self._vocoder = make_vocoder(self._vocoder)
        return self._vocoder

    @property
    def transcriber(self):
        if isinstance(self._transcriber, str):
            from speechrl.speech.transcribe import make_transcriber

            self._transcriber = make_transcriber(self._transcriber)
        return self._transcriber

    def render(self, units: Sequence[Any]) -> list[np.ndarray]:
        """One 16 kHz waveform per unit sequence (silence for a sequence with nothing speakable), through
        the vocoder's batch path (Piper speaks as many clips at once as torch has threads)."""
        return self.vocoder.render_batch(units)

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        return self.transcriber.transcribe(list(wavs))

    def windowed(self, window_s: float) -> "UnitRenderer":
        """This renderer (the same vocoder) with Whisper's encoder window cut to ``window_s`` seconds for
        the clips that fit it (:class:`~speechrl.speech.transcribe.WhisperCT2Transcriber`'s ``window_s``):
        a cheaper reward transcriber. 30: this renderer itself."""
        if window_s >= 30.0:
            return self
        transcriber = self.transcriber
        if not hasattr(transcriber, "window_s"):
            raise ValueError(f"a {window_s} s encoder window needs a CTranslate2 Whisper transcriber, not "
                             f"{type(transcriber).__name__}; set the window to 30")
        transcriber = copy.copy(transcriber)  # the loaded model is shared (cached per process)
        transcriber.window_s = window_s
        return UnitRenderer(self.vocoder, transcriber)

    def __call__(self, units: Sequence[Any]) -> tuple[list[np.ndarray], list[str]]:
        wavs = self.render(units)
        if self._heard is None:
            return wavs, self.transcribe(wavs)
        keys = [(u.kind, u.frame_rate, tuple(u.ids), tuple(u.durations or ())) for u in units]
        new = [i for i, k in enumerate(keys) if k not in self._heard]
        for i, text in zip(new, self.transcribe([wavs[i] for i in new])):
            self._heard[keys[i]] = text
        return wavs, [self._heard[k] for k in keys]


def evaluation_renderer() -> UnitRenderer:
    """The renderer TTS evaluations use: Piper, Whisper tiny.en one clip at a time (a transcript that does not
    depend on its batch), transcripts remembered per unit sequence."""
    from speechrl.speech.transcribe import make_transcriber

    return UnitRenderer(transcriber=make_transcriber("whisper-tiny", batch_size=1), remember=True)


def _groups(group: Sequence[Any] | None, n: int) -> dict[Any, list[int]]:
    if group is None:
        raise ValueError("this reward needs the per-sample column 'group' (one id per prompt's samples)")
    group = list(group)
    if len(group) != n:
        raise ValueError(f"column 'group' has {len(group)} entries for {n} completions")
    members: dict[Any, list[int]] = defaultdict(list)
    for i, g in enumerate(group):
        members[g].append(i)
    return members


@reward("tts_duration", -math.inf, 0.0)
def tts_duration(prompts: Sequence[Any] | None, completions: Sequence[Any], seconds: Sequence[float],
                    group: Sequence[Any], **columns: Any) -> list[float]:
    """R2 (Tongyi TTS GRPO): r_i = −|len_i − median_g| / median_g, with median_g the median length over
    the sample's group, so the policy does not drift slower (or faster) than its own typical rate;
    in (−∞, 0]. ``seconds``: the rendered audio length of each sample. A group whose median is 0
    gives NaN (invalid samples, masked by the trainer)."""
    n = len(completion_texts(completions))
    lengths = np.asarray([float(s) for s in seconds], dtype=np.float64)
    if lengths.size != n:
        raise ValueError(f"column 'seconds' has {lengths.size} entries for {n} completions")
    out = [math.nan] * n
    for members in _groups(group, n).values():
        median = float(np.median(lengths[members]))
        for i in members:
            out[i] = -abs(lengths[i] - median) / median if median > 0 else math.nan
    return out


@reward("tts_diversity", 0.0, 1.0)
def tts_diversity(prompts: Sequence[Any] | None, completions: Sequence[Any],
                     speech_tokens: Sequence[Sequence[int]], group: Sequence[Any], **columns: Any) -> list[float]:
    """R3 (token diversity): mean over the other samples j of the group of the normalised edit
    distance d(i, j) = Levenshtein(tokens_i, tokens_j) / max(|tokens_i|, |tokens_j|); in [0, 1],
    0 when every sample says the same tokens (a lone sample scores 0)."""
    n = len(completion_texts(completions))
    tokens = [list(t) for t in speech_tokens]
    if len(tokens) != n:
        raise ValueError(f"column 'speech_tokens' has {len(tokens)} entries for {n} completions")
    out = [0.0] * n
    for members in _groups(group, n).values():
        for i in members:
            others = [j for j in members if j != i]
            if others:
                out[i] = float(np.mean([Levenshtein.normalized_distance(tokens[i], tokens[j]) for j in others]))
    return out


TTS_REWARDS = {fn.name: fn for fn in (tts_duration, tts_diversity)}
"""The rewards this module adds to :data:`speechrl.rewards.REWARDS`."""
