"""Which base unit LM reads a story? Pretrain one on whole stories and score the story-context diagnostic
(issue 24, item 1).

The unit LM of ``recipes/align_slm.yaml`` (SmolLM2-135M warm start, ``--layers`` decoder layers) is
pretrained on ``--stories`` long-form grammar stories (:func:`speechrl.pipelines.align_slm.long_form_sequences`:
each told by one corpus voice, synthesized, encoded, cached), optionally over acoustic words
(``--bpe V``: :class:`speechrl.speech.units.bpe.UnitBPE` with V tokens, learnt on the training stories).
Every ``--eval-every`` steps it prints the dev NLL (held-out stories; it picks the checkpoint) and
:func:`~speechrl.align.minimal_pairs.story_context_use` on a *dev* T-StoryCloze-like set (grammar stories
of ``--dev-seed``, none of which a training story tells): the share of pairs whose true ending has the lower
NLL given the story (``ending|context``) and with no story (``ending alone``). At the end, the same on
the recipe's own T-StoryCloze-like benchmark (the issue's bar: ≥ 65 % given the story).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/story_context_pretrain.py --out /tmp/sc --stories 1000 \\
        --layers 4 --steps 1200 --batch 4 --max-tokens 384
    OMP_NUM_THREADS=1 .venv/bin/python scripts/story_context_pretrain.py --out /tmp/sc_bpe --stories 1000 \\
        --layers 19 --bpe 2000 --steps 400 --batch 8 --max-tokens 128
    # recognized speech read as lexicon words, beside the stories' text
    OMP_NUM_THREADS=2 .venv/bin/python scripts/story_context_pretrain.py --out /tmp/sc_words --source lexicon \\
        --text --word-init --steps 700 --batch 16 --max-tokens 128 --eval-every 100
    # the control without recognition that reads the story (99 % at step 500)
    OMP_NUM_THREADS=2 .venv/bin/python scripts/story_context_pretrain.py --out /tmp/sc_g2p --source g2p \\
        --bpe 2000 --word-init --steps 700 --batch 16 --max-tokens 128 --eval-every 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


from speechrl.align.minimal_pairs import benchmark_segments, benchmark_stories, build_benchmark, story_context_use
from speechrl.corpus.grammar import generate_stories, vocabulary
from speechrl.models.hub import cache_dir, load_tokenizer
from speechrl.models.unit_lm import UnitLM
from speechrl.pipelines.align_slm import AlignSLMRecipe, LongFormConfig, long_form_sequences, long_form_stories
from speechrl.runlog import MetricsLogger
from speechrl.speech.units import BLANK_ID, WORD_BOUNDARY_ID, text_phonemes
from speechrl.speech.units.bpe import UnitBPE, unit_chars
from speechrl.speech.units.lexicon import LexiconWords
from speechrl.trainers.unit_lm import pretrain_config, train_unit_lm


def g2p_units(sentences: list[str]) -> list[int]:
    """A story's sentences as hama G2P phonemes, a word boundary before each (as a recognized story starts)."""
    return [u for text in sentences for u in (WORD_BOUNDARY_ID, *text_phonemes(text).ids)]


def grammar_lexicon() -> LexiconWords:
    """The grammar's words, each with the spelling its stories write (names capitalised)."""
    return LexiconWords.from_texts((x.text for st in generate_stories(500, 0) for x in st.sentences), vocabulary())


def bpe_words(codec: UnitBPE, lexicon: LexiconWords) -> dict[int, str]:
    """The BPE tokens that spell a whole grammar word (its G2P phonemes, boundary first), as written."""
    vocab = codec.tokenizer.get_vocab()
    pieces = {f: unit_chars((WORD_BOUNDARY_ID, *p)) for f, p in zip(lexicon.forms, lexicon.pronunciations)}
    return {vocab[p]: f for f, p in pieces.items() if p in vocab}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="training folder (resumable)")
    parser.add_argument("--stories", type=int, default=1000, help="long-form training stories")
    parser.add_argument("--dev-stories", type=int, default=100, help="held-out stories for the dev NLL")
    parser.add_argument("--layers", type=int, default=4, help="SmolLM2 decoder layers kept")
    parser.add_argument("--bpe", type=int, default=0, help="acoustic-word vocabulary size (0: phoneme units)")
    parser.add_argument("--source", choices=("audio", "g2p", "lexicon"), default="audio",
                        help="g2p: a control without recognition — every story (and pair) as the hama G2P phonemes "
                             "of its text, each word spelt the same way every time; lexicon: the recognized units "
                             "read as the grammar's words (speechrl.speech.units.lexicon)")
    parser.add_argument("--word-init", action="store_true",
                        help="a token that stands for a grammar word (with --bpe: spells its G2P phonemes, boundary "
                             "first) starts from the text LM's embedding of that word")
    parser.add_argument("--text", action="store_true",
                        help="with --source audio/lexicon: each training story's text (G2P) beside its speech "
                             "(the recipe's long_form.text)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=4, help="stories per step")
    parser.add_argument("--max-tokens", type=int, default=384, help="tokens per training sequence")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--dev-pairs", type=int, default=100, help="pairs of the dev story-cloze set")
    parser.add_argument("--dev-seed", type=int, default=2,
                        help="grammar seed of the dev story-cloze set (not the benchmark's 0 or the corpus's 1)")
    args = parser.parse_args()
    start = time.time()
    recipe = AlignSLMRecipe(long_form=LongFormConfig(stories=args.stories, dev_stories=args.dev_stories, text=args.text))
    bench = recipe.benchmarks
    dev_seed = args.dev_seed
    test_pairs = build_benchmark("tsc", cache_dir() / "benchmarks", bench.pairs, bench.seed, bench.voices)
    dev_pairs = build_benchmark("tsc", cache_dir() / "benchmarks_dev", args.dev_pairs, dev_seed, bench.voices)
    if args.source == "g2p":
        stories = long_form_stories(recipe, benchmark_stories(args.dev_pairs, dev_seed))
        seqs = [g2p_units([x.text for x in st.sentences]) for st in stories]
        train, dev = seqs[args.dev_stories:], seqs[:args.dev_stories]
        def as_g2p(pairs, n, seed):  # the same pairs (pair i = item i of the set), spelt by G2P
            items = benchmark_segments("tsc", n, seed)
            return [dataclasses.replace(p, positive_units=g2p_units(items[i][0]), negative_units=g2p_units(items[i][1]))
                    for p in pairs for i in [int(p.id.rsplit("-", 1)[1])]]

        test_pairs, dev_pairs = as_g2p(test_pairs, bench.pairs, bench.seed), as_g2p(dev_pairs, args.dev_pairs, dev_seed)
    else:
        train, dev = long_form_sequences(recipe, held_out=benchmark_stories(args.dev_pairs, dev_seed))
    num_units, token_words = BLANK_ID, {}
    lexicon = grammar_lexicon()
    codec = (lexicon if args.source == "lexicon"
             else UnitBPE.train(train, args.bpe) if args.bpe else None)
    if codec is not None:
        train, dev = codec.encode_batch(train), codec.encode_batch(dev)
        test_pairs, dev_pairs = ([dataclasses.replace(p, positive_units=codec.encode(p.positive_units),
                                                      negative_units=codec.encode(p.negative_units)) for p in pairs]
                                 for pairs in (test_pairs, dev_pairs))
        num_units = codec.vocab_size
        token_words = dict(enumerate(codec.forms)) if codec is lexicon else bpe_words(codec, lexicon)
    print(json.dumps({"train_stories": len(train), "tokens_per_story": round(sum(map(len, train)) / len(train), 1),
                      "vocabulary": num_units, "data_s": round(time.time() - start)}), flush=True)
    model = UnitLM.create(recipe.model.lm, num_units, args.layers, seed=recipe.seed)
    if args.word_init:
        model.init_from_text(token_words, load_tokenizer(recipe.model.lm))
        print(json.dumps({"word_init": len(token_words)}), flush=True)

    def dev_metrics(unit_lm: UnitLM) -> dict[str, float]:
        metrics = {f"dev_tsc {k}": v for k, v in story_context_use(dev_pairs, unit_lm.nll).items()}
        print(json.dumps({**metrics, "s": round(time.time() - start)}), flush=True)
        return metrics

    cfg = pretrain_config(batch_size=args.batch, max_steps=args.steps, max_tokens=args.max_tokens, lr=args.lr,
                          eval_every=args.eval_every, checkpoint_every=args.eval_every)
    result = train_unit_lm(model, train, dev, cfg, args.out, MetricsLogger(args.out), dev_metrics=dev_metrics)
    model.eval()
    print(json.dumps({"best_step": result["best_step"], "step_s": result["step_s"],
                      "test_tsc": story_context_use(test_pairs, model.nll), "s": round(time.time() - start)}))


if __name__ == "__main__":
    main()
