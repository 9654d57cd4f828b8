"""Speech-aware LM: audio front end (encoder + projector) + a Hugging Face causal LM.

The prompt is the LM's own chat turn (``tokenizer.apply_chat_template``) whose user message is the audio
span followed by the instruction; the audio span is a run of front-end embeddings. For SmolLM2:

    <|im_start|>user\\n [audio embeddings] \\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n

The template is rendered with a marker string where the audio goes and split there: the ids before and
after the audio span (cached per instruction). A default system turn that a template injects when the
conversation has none (SmolLM2's "You are a helpful AI assistant named SmolLM…", Qwen2.5's "You are
Qwen…") is left out unless ``system`` is given, so every LM sees the same turn (and SmolLM2's prompt ids
are those of the layout used before templates were read). A tokenizer without a chat template gets
that layout built from its BOS/EOS. A completion ends with the template's end-of-turn token
(``<|im_end|>``, Llama-3's ``<|eot_id|>``), so generation stops where the assistant turn ends.

Prompts are left-padded so that generation and teacher-forced scoring see identical positions. Only
completion tokens are ever scored (prompt and audio positions never enter a loss), and prompts are
never truncated, so an audio span is never cut. Implements :class:`speechrl.models.policy.Policy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.frontends import make_front_end
from speechrl.models.hub import load_causal_lm, load_tokenizer, read_model_folder, save_model_folder
from speechrl.models.policy import Encoded, PromptBatch, generated_logps, left_pad_embeds


def truncate_layers(lm: PreTrainedModel, num_layers: int | None) -> PreTrainedModel:
    """Keep the first ``num_layers`` decoder layers (a CPU-speed trade-off; ``None`` keeps all)."""
    layers = lm.model.layers
    if num_layers is None or num_layers >= len(layers):
        return lm
    lm.model.layers = layers[:num_layers]
    lm.config.num_hidden_layers = num_layers
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:num_layers]
    return lm


AUDIO_MARK = "<<speechrl:audio>>"  # where the audio span goes in the rendered chat turn
_TURN_END_MARK = "<<speechrl:reply>>"  # an assistant message, to read the template's end of turn


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def chat_turn_end(tokenizer: Any) -> str | None:
    """The text a chat template writes after an assistant message (``<|im_end|>\\n``, ``<|eot_id|>``);
    ``None`` without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = _render(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": _TURN_END_MARK}],
                   False)
    return text[text.rindex(_TURN_END_MARK) + len(_TURN_END_MARK):] if _TURN_END_MARK in text else None


def chat_prompt_text(tokenizer: Any, instruction: str, system: str | None = None) -> tuple[str, str]:
    """(text before, text after) the audio span of the user turn ``AUDIO_MARK + "\\n" + instruction``
    rendered by the tokenizer's chat template with the generation prompt. ``system`` None leaves out a
    default system turn the template injects: the user turn then starts after the last end of turn
    before it, and a BOS the template wrote first stays."""
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": AUDIO_MARK + "\n" + instruction}]
    text = _render(tokenizer, messages, True)
    if text.count(AUDIO_MARK) != 1:
        raise ValueError(f"the chat template does not render the user message verbatim: {text!r}")
    before, after = text.split(AUDIO_MARK)
    end = chat_turn_end(tokenizer)
    if system is None and end and end in before:  # a default system turn the template injected
        user = before[before.rindex(end) + len(end):]
        bos = tokenizer.bos_token or ""
        before = (bos if bos and before.startswith(bos) and not user.startswith(bos) else "") + user
    return before, after


class SpeechLM(nn.Module):
    def __init__(self, lm: PreTrainedModel, tokenizer: Any, front_end: nn.Module, front_end_kwargs: dict[str, Any],
                 lm_name: str = "", system: str | None = None):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.front_end = front_end
        self.front_end_kwargs = front_end_kwargs
        self.lm_name = lm_name
        self.system = system
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = self._end_of_turn_id()
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}

    def _end_of_turn_id(self) -> int:
        """The first token of the template's end of turn when it is one special token (``<|im_end|>``,
        ``<|eot_id|>``), else the tokenizer's EOS."""
        tok, end = self.tokenizer, chat_turn_end(self.tokenizer)
        if end and end.strip():
            ids = tok(end.strip(), add_special_tokens=False)["input_ids"]
            special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
            if ids and ids[0] in special:
                return ids[0]
        return tok.eos_token_id

    @classmethod
    def create(cls, lm_name: str = "smollm2-135m", front_end: str = "units", decoder_layers: int | None = None,
               **front_end_kwargs: Any) -> "SpeechLM":
        """A new speech LM: pretrained LM (optionally truncated) + a fresh front end."""
        lm = truncate_layers(load_causal_lm(lm_name), decoder_layers)
        fe = make_front_end(front_end, lm.config.hidden_size, **front_end_kwargs)
        return cls(lm, load_tokenizer(lm_name), fe, {"kind": front_end, **front_end_kwargs}, lm_name)

    # -- Policy ---------------------------------------------------------------------------------
    def featurize(self, audio: Any) -> dict[str, Any]:
        return self.front_end.featurize(audio)

    @property
    def encoder_cache_key(self) -> str | None:
        """The front end's frozen-encoder cache name (:func:`speechrl.data.features.cached_encodings`);
        ``None`` where its encoder trains or it has no cache (``units``, ``mel``)."""
        return getattr(self.front_end, "encoder_cache_key", None)

    def encoder_outputs(self, feats: list[dict[str, Any]]) -> torch.Tensor:
        return self.front_end.encoder_outputs(feats)

    def prompt_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        """(ids before, ids after) the audio span of the prompt for ``instruction`` (cached)."""
        if instruction not in self._prompt_cache:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                before, after = chat_prompt_text(tok, instruction, self.system)
            else:  # the ChatML-like layout from BOS/EOS
                before = tok.bos_token + "user\n" if tok.bos_token else "user\n"
                after = f"\n{instruction}{tok.eos_token}\n{tok.bos_token or ''}assistant\n"
            self._prompt_cache[instruction] = (tok(before, add_special_tokens=False)["input_ids"],
                                               tok(after, add_special_tokens=False)["input_ids"])
        return self._prompt_cache[instruction]

    def encode(self, batch: PromptBatch) -> Encoded:
        """Front end once per prompt → left-padded prompt embeddings ``embeds`` [B, P, D] + ``mask``."""
        device = self.lm.device
        feats = {k: v.to(device) for k, v in self.front_end.collate(batch.audio).items()}
        audio, audio_mask = self.front_end(**feats)
        embed = self.lm.get_input_embeddings()
        rows = []
        for i, instruction in enumerate(batch.text):
            before, after = self.prompt_ids(instruction)
            pre = embed(torch.tensor(before, dtype=torch.long, device=device))
            suf = embed(torch.tensor(after, dtype=torch.long, device=device))
            rows.append(torch.cat([pre, audio[i][audio_mask[i].bool()], suf]))
        return left_pad_embeds(rows)

    @torch.no_grad()
    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, return_logps: bool = False) -> Any:
        """Completion ids [N, T]; with ``return_logps``: ``(ids, logps)``, the sampled tokens' log-probs
        at the sampling temperature (:func:`~speechrl.models.policy.generated_logps`)."""
        kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = self.lm.generate(inputs_embeds=enc["embeds"], attention_mask=enc["mask"], max_new_tokens=max_new_tokens,
                               eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
                               output_logits=return_logps, return_dict_in_generate=return_logps, **kw)
        ids = out.sequences if return_logps else out
        ids = ids[:, -max_new_tokens:] if ids.shape[1] > max_new_tokens else ids
        return (ids, generated_logps(out, ids, temperature if do_sample else 1.0)) if return_logps else ids

    def forward(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
        """Same as :meth:`completion_logps` (so DDP-wrapped training goes through ``forward``)."""
        return self.completion_logps(enc, completion_ids, completion_mask, temperature)

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(o_t | prompt, o_<t) for every completion token [N, T] (teacher forcing; logits / T)."""
        embeds, mask = enc["embeds"], enc["mask"]
        comp = self.lm.get_input_embeddings()(completion_ids)
        full_mask = torch.cat([mask, completion_mask.to(mask.dtype)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        t = completion_ids.shape[1]
        logits = self.lm(inputs_embeds=torch.cat([embeds, comp], dim=1), attention_mask=full_mask,
                         position_ids=positions, logits_to_keep=t + 1).logits  # the LM head only where scored
        return token_logps(logits[:, :-1], completion_ids, temperature)

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """``lm/`` (HF folder, safetensors; LoRA merged), ``front_end.safetensors``, ``speech_lm.json``."""
        fe = self.front_end  # a front end with saved_state() leaves out what reloads from its kwargs
        state = fe.saved_state() if hasattr(fe, "saved_state") else fe.state_dict()
        return save_model_folder(folder, self.lm, self.tokenizer, state, "front_end.safetensors",
                                 {"front_end": self.front_end_kwargs, "lm_name": self.lm_name, "system": self.system},
                                 "speech_lm.json")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "SpeechLM":
        meta, tokenizer, tensors = read_model_folder(folder, "front_end.safetensors", "speech_lm.json")
        lm = load_causal_lm(str(Path(folder) / "lm"))
        fe_kwargs = dict(meta["front_end"])
        fe = make_front_end(fe_kwargs.pop("kind"), lm.config.hidden_size, **fe_kwargs)
        fe.load_saved_state(tensors) if hasattr(fe, "load_saved_state") else fe.load_state_dict(tensors)
        return cls(lm, tokenizer, fe, meta["front_end"], meta.get("lm_name", ""), meta.get("system"))
