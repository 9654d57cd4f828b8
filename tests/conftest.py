"""Shared test set-up: offline hub, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A real synthesized corpus (≈40 utterances), built once per session through the CLI."""
    from speechrl.cli import main

    out = tmp_path_factory.mktemp("corpus")
    assert main(["corpus", "build", "--out", str(out), "--size", "40", "--seed", "3",
                 "--set", "roundtrip_utterances=4"]) == 0
    return out
