"""Model families: the one registry every part of plmexit reads what it knows about a family from.

Invariant: this module imports only the standard library (and plmexit's torch-free ``errors``), so the command line, the workflow's planning and the tests can list
families without importing torch or transformers. A family's loader code (``loader``, a module path) is imported by whoever runs the
model; here a family is plain data: how its checkpoints are recognised, where its blocks, final
norm and masked-LM head sit, how its tokenizer wants residues, and what test model it has.
Adding a family is one ``Family`` below plus its loading (and test-model writing) code in
``loader``; the command line's choices, the planning sets and the wildcard constraints follow,
and ``tests/models/test_families.py`` holds the config schema's enums to these tuples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plmexit.errors import ModelError

# ESM2 was trained on 1024-token crops: BOS + 1022 residues + EOS (as fair-esm's extract.py).
ESM2_MAX_RESIDUES = 1022

# The two backends; a model manifest's ``format`` is its family's backend.
FAIR_ESM, TRANSFORMERS = "fair-esm", "transformers"
# A random model make-test-model writes: a fair-esm checkpoint file ``esm2_..._random.pt`` (fair-esm
# picks the ESM2 architecture by the file name's start), or a transformers directory ``{family}_..._random``.
TEST_MODEL_NAME = "{stem}_t{layers}_{dim}d_{heads}h_seed{seed}_random{suffix}"
FAIR_ESM_STEM = "esm2"


@dataclass(frozen=True)
class MaskedLM:
    """The class the depth diagnostics read a family's masked-LM head from, and where its parts sit.

    ``encoder``: attribute path of the encoder inside it ("" when the class is the encoder itself,
    as fair-esm's ``ESM2``); ``head``: attribute path of the LM head.
    """

    cls: str
    encoder: str
    head: str


@dataclass(frozen=True)
class Family:
    """One family of protein language models, as plain data.

    ``model_types``: the ``config.json`` ``model_type`` values a transformers family reads;
    ``inferred``: the family is chosen when ``model_type`` names it and the config names none
    (False for Ankh, whose config says ``t5``). ``encoder_class``: the class loaded to embed
    (``pooler``: it takes ``add_pooling_layer``, passed False). ``blocks``/``final_norm``: attribute
    paths in the encoder; ``shared_blocks``: ALBERT's groups of shared layers, run
    ``num_hidden_layers`` times (``run_order_blocks``); ``final_norm`` is None for post-norm
    families (BERT, ALBERT) whose every block output is already normalised, so the ``raw`` and
    ``final`` layer conventions coincide for them. ``rare_to_x``: the model card maps U Z O B to X;
    ``spaced``: its tokenizer takes residues separated by spaces (Rostlab's model cards).
    ``max_residues``: residues one forward may hold where its positions set no limit (ESM2's rotary
    positions: it was trained on 1024-token crops); None: ``max_position_embeddings`` minus two
    special tokens. ``masked_lm``: the head the depth diagnostics read (None: none).
    ``test_model``: ``make-test-model`` writes a random one (``test_model_name``).
    """

    name: str
    backend: str
    loader: str
    model_types: tuple[str, ...] = ()
    inferred: bool = True
    encoder_class: str | None = None
    pooler: bool = False
    blocks: str = ""
    shared_blocks: bool = False
    final_norm: str | None = None
    final_norm_description: str = ""
    rare_to_x: bool = False
    spaced: bool = False
    max_residues: int | None = None
    masked_lm: MaskedLM | None = None
    test_model: bool = False


_POST_NORM = "none: post-LN blocks, every layer output is already normalised, so raw and final are the same"
_T5_NORM = "encoder.final_layer_norm (T5's RMS norm)"

REGISTRY: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "fair-esm", FAIR_ESM, "plmexit.models.fair_esm",
            blocks="layers", final_norm="emb_layer_norm_after", final_norm_description="emb_layer_norm_after",
            max_residues=ESM2_MAX_RESIDUES, masked_lm=MaskedLM("ESM2", "", "lm_head"), test_model=True,
        ),
        Family(
            "esm", TRANSFORMERS, "plmexit.models.hub", ("esm",),
            encoder_class="EsmModel", pooler=True, blocks="encoder.layer", final_norm="encoder.emb_layer_norm_after",
            final_norm_description="emb_layer_norm_after (as fair-esm)", max_residues=ESM2_MAX_RESIDUES,
            masked_lm=MaskedLM("EsmForMaskedLM", "esm", "lm_head"), test_model=True,
        ),
        Family(
            "bert", TRANSFORMERS, "plmexit.models.hub", ("bert",),
            encoder_class="BertModel", pooler=True, blocks="encoder.layer", final_norm_description=_POST_NORM, rare_to_x=True, spaced=True,
            masked_lm=MaskedLM("BertForMaskedLM", "bert", "cls"), test_model=True,
        ),
        Family(
            "albert", TRANSFORMERS, "plmexit.models.hub", ("albert",),
            encoder_class="AlbertModel", pooler=True, blocks="encoder.albert_layer_groups", shared_blocks=True, final_norm_description=_POST_NORM,
            rare_to_x=True, spaced=True, masked_lm=MaskedLM("AlbertForMaskedLM", "albert", "predictions"), test_model=True,
        ),
        Family(
            "t5", TRANSFORMERS, "plmexit.models.hub", ("t5",),
            encoder_class="T5EncoderModel", blocks="encoder.block", final_norm="encoder.final_layer_norm", final_norm_description=_T5_NORM,
            rare_to_x=True, spaced=True, test_model=True,
        ),
        # Ankh's config.json says t5, so a t5 model is ProtT5 unless the config names ankh.
        Family(
            "ankh", TRANSFORMERS, "plmexit.models.hub", ("t5",),
            inferred=False, encoder_class="T5EncoderModel", blocks="encoder.block", final_norm="encoder.final_layer_norm",
            final_norm_description=_T5_NORM,
        ),
        Family(
            "esmc", TRANSFORMERS, "plmexit.models.hub", ("esmc",),
            encoder_class="EsmcModel", blocks="layers", final_norm="norm", final_norm_description="norm (ESM-C's final layer norm)",
            masked_lm=MaskedLM("EsmcForMaskedLM", "esmc", "lm_head"), test_model=True,
        ),
    )
}

FAMILIES = tuple(REGISTRY)
# A config's hub/path model and fetch-model's --family (the schema's models.family enum).
HUB_FAMILIES = tuple(f.name for f in REGISTRY.values() if f.backend == TRANSFORMERS)
# Transformers families whose masked-LM head the depth diagnostics read (fair-esm's ESM2 has one too).
MASKED_LM_FAMILIES = tuple(f.name for f in REGISTRY.values() if f.backend == TRANSFORMERS and f.masked_lm is not None)
# make-test-model's --family and a config's random.family (the schema's enum), fair-esm first: the default.
TEST_MODEL_FAMILIES = tuple(f.name for f in REGISTRY.values() if f.test_model)
# Those written as a transformers model directory (plmexit.models.hub.make_test_model).
HUB_TEST_MODEL_FAMILIES = tuple(name for name in TEST_MODEL_FAMILIES if name in HUB_FAMILIES)
DEFAULT_TEST_MODEL_FAMILY = FAIR_ESM
# The family a transformers model's config.json ``model_type`` implies when the config names none.
INFERRED_FAMILY = {t: f.name for f in REGISTRY.values() if f.backend == TRANSFORMERS and f.inferred for t in f.model_types}


def get(name: str) -> Family:
    """The family called ``name``; a ``ModelError`` naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ModelError(f"model family {name!r} is not known; use one of {', '.join(FAMILIES)}")
    return REGISTRY[name]


def for_model_type(model_type: str | None) -> Family | None:
    """The family a transformers ``config.json`` ``model_type`` implies (``INFERRED_FAMILY``), or None."""
    name = INFERRED_FAMILY.get(model_type)
    return None if name is None else REGISTRY[name]


def test_model_name(family: str, layers, dim, heads, seed) -> str:
    """The file (fair-esm) or directory (a transformers family) name ``make-test-model`` writes for a
    random model of ``family``: ``esm2_t2_32d_4h_seed0_random.pt``, ``bert_t2_32d_4h_seed0_random``."""
    entry = get(family)
    if not entry.test_model:
        raise ModelError(f"test model: family {family!r} has no test model; use one of {', '.join(TEST_MODEL_FAMILIES)}")
    stem, suffix = (FAIR_ESM_STEM, ".pt") if entry.backend == FAIR_ESM else (family, "")
    return TEST_MODEL_NAME.format(stem=stem, layers=layers, dim=dim, heads=heads, seed=seed, suffix=suffix)


def wildcard_pattern(names: tuple[str, ...]) -> str:
    """A Snakemake wildcard constraint (a regular expression) matching exactly ``names``."""
    return "|".join(re.escape(name) for name in names)


def attribute(obj, path: str):
    """``obj.a.b`` for ``path = "a.b"`` (``obj`` itself for ``""``)."""
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def run_order_blocks(encoder, family: str) -> list:
    """The block modules of a loaded ``family`` encoder in the order its forward runs them; a layer
    ALBERT shares is listed once per application (as ``AlbertTransformer.forward`` picks its group
    for layer ``i``). Duck-typed: this module never imports torch."""
    entry = get(family)
    if not entry.shared_blocks:
        return list(attribute(encoder, entry.blocks))
    c, groups = encoder.config, attribute(encoder, entry.blocks)
    return [layer for i in range(c.num_hidden_layers) for layer in groups[int(i / (c.num_hidden_layers / c.num_hidden_groups))].albert_layers]
