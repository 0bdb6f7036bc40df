"""The synthetic-speech embedding fixture (training/train_embedding.py): it loads through the real
loader with its provenance, stays small, and tells voices it never saw apart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "embedding-synthetic"

# A handful of held-out voices (held-out variants, languages and words; seed other than the
# evaluation's), 3 short clean utterances each: enrol with 1, identify the other 2.
# The committed checkpoint measured 23/24 = 0.958 correct and a same/different cosine gap of
# 0.98 (0.957 vs -0.024) on this set; random:0 weights sit near chance. The bounds leave room
# for BLAS/platform differences only. (On pyannote's real-speech sample the fixture does *not*
# separate the two speakers, see the fixture README: nothing is asserted there.)
SMALL_SEED = 4242
SMALL_VARIANTS = ("m6", "f4", "klatt2", "steph", "croak", "Storm")
SMALL_PITCHES = (20, 80)
ACCURACY_MIN = 0.83  # at most 4 of 24 wrong
GAP_MIN = 0.6  # mean same-speaker cosine minus mean different-speaker cosine


@pytest.fixture(scope="session")
def synthetic_emb():
    from coreml_diarize.sources import load_weights

    return load_weights("embedding", str(FIXTURE_DIR))


@pytest.fixture(scope="session")
def small_heldout(synthetic_emb):
    from training.evaluate_embedding import (
        embed,
        heldout_speakers,
        heldout_utterances,
        pair_stats,
        speaker_id,
    )

    speakers = replace(
        heldout_speakers(utterances=3),
        variants=SMALL_VARIANTS,
        pitches=SMALL_PITCHES,
        words_per_utterance=(4, 6),
    )
    utts = heldout_utterances(SMALL_SEED, speakers=speakers)
    model = synthetic_emb.model
    embeddings = [np.concatenate([embed(model, u) for u in per]) for per in utts]
    labels = np.repeat(np.arange(len(embeddings)), 3)
    return speaker_id(embeddings, enrol=1), pair_stats(np.concatenate(embeddings), labels)


def test_fixture_loads_as_trained_with_its_training_data(synthetic_emb):
    prov = synthetic_emb.provenance
    assert prov.kind == "local" and prov.trained is True
    assert prov.trained_on and "synthetic speech" in prov.trained_on
    assert prov.as_metadata()["source.trained_on"] == prov.trained_on
    assert type(synthetic_emb.model).__name__ == "WeSpeakerResNet34"
    assert int(synthetic_emb.model.dimension) == 256
    # fp16 on disk, restored into the fp32 model
    assert {str(p.dtype) for p in synthetic_emb.model.parameters()} == {"torch.float32"}


def test_fixture_has_the_converters_architecture(synthetic_emb):
    from coreml_diarize.sources import build_architecture

    reference = build_architecture("embedding").state_dict()
    loaded = synthetic_emb.model.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(loaded[k].shape == reference[k].shape for k in reference)


def test_fixture_identifies_heldout_voices(small_heldout):
    ident, _ = small_heldout
    assert ident["speakers"] == len(SMALL_VARIANTS) * len(SMALL_PITCHES)
    assert ident["accuracy"] >= ACCURACY_MIN


def test_fixture_separates_heldout_voices(small_heldout):
    _, pairs = small_heldout
    assert pairs["same_cosine_mean"] - pairs["different_cosine_mean"] >= GAP_MIN


def test_speaker_generation_is_deterministic():
    from training.train_embedding import (
        SpeakerSet,
        TrainConfig,
        make_batch,
        speaker_streams,
        synthesize_speakers,
        voices_for,
    )

    tiny = SpeakerSet(variants=("m1", "f2"), pitches=(20, 80), utterances=1)
    cfg = TrainConfig(batch_size=3, crop_seconds=0.5)

    def one():
        voices = voices_for(tiny, seed=7)
        streams = speaker_streams(synthesize_speakers(voices, tiny, seed=8))
        x, y = make_batch(streams, np.random.default_rng(9), cfg)
        return voices, x, y

    (v1, x1, y1), (v2, x2, y2) = one(), one()
    assert v1 == v2 and len(v1) == 4
    assert len({(v.variant, v.pitch) for v in v1}) == 4  # one speaker per variant x pitch level
    assert x1.shape == (3, 1, 8000) and np.abs(x1).max() > 0
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert len(set(y1.tolist())) == 3  # distinct speakers in a batch


def test_heldout_voices_are_disjoint_from_training():
    from training import corpus, evaluate_embedding, train_embedding

    train = set(train_embedding.TRAIN_VARIANTS)
    assert not train & set(train_embedding.HELDOUT_VARIANTS)
    assert set(evaluate_embedding.EVAL_VARIANTS) <= set(train_embedding.HELDOUT_VARIANTS)
    assert set(corpus.HELDOUT_VARIANTS) <= set(train_embedding.HELDOUT_VARIANTS)
    heldout = evaluate_embedding.heldout_speakers()
    assert not set(heldout.languages) & set(train_embedding.SpeakerSet().languages)
    assert not set(heldout.words) & set(train_embedding.SpeakerSet().words)
