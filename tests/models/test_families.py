"""The family registry: torch-free, the one source of the schema's family enums, the command line's
choices and the planning sets, and consistent with the loader code it names."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from plmexit.cli import build_parser
from plmexit.errors import ModelError
from plmexit.models import families
from plmexit.pipeline import planning

from workflow_runs import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_the_registry_the_planning_and_the_command_line_import_no_torch():
    code = "import sys, plmexit.models.families, plmexit.pipeline.planning, plmexit.cli; print(sorted({'torch', 'transformers', 'esm'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def test_the_derived_sets():
    assert families.FAMILIES == ("fair-esm", "esm", "bert", "albert", "t5", "ankh", "esmc")
    assert families.HUB_FAMILIES == ("esm", "bert", "albert", "t5", "ankh", "esmc")
    assert families.MASKED_LM_FAMILIES == ("esm", "bert", "albert", "esmc")
    assert families.TEST_MODEL_FAMILIES == ("fair-esm", "esm", "bert", "albert", "t5", "esmc")
    assert families.HUB_TEST_MODEL_FAMILIES == ("esm", "bert", "albert", "t5", "esmc")
    # Ankh's config.json says t5: a t5 model is ProtT5 unless the config names ankh.
    assert families.INFERRED_FAMILY == {"esm": "esm", "bert": "bert", "albert": "albert", "t5": "t5", "esmc": "esmc"}
    assert families.for_model_type("t5").name == "t5" and families.for_model_type("llama") is None and families.for_model_type(None) is None
    assert planning.MASKED_LM_FAMILIES is families.MASKED_LM_FAMILIES


def test_the_schema_enums_are_the_registry():
    """JSON Schema cannot import the registry, so this test holds its family enums to it."""
    model = yaml.safe_load(SCHEMA.read_text())["properties"]["models"]["items"]["properties"]
    assert tuple(model["family"]["enum"]) == families.HUB_FAMILIES
    random = model["random"]["properties"]["family"]
    assert tuple(random["enum"]) == families.TEST_MODEL_FAMILIES and random["default"] == families.DEFAULT_TEST_MODEL_FAMILY


def test_the_command_line_offers_the_registry_families():
    commands = {
        name: parser for action in build_parser()._subparsers._group_actions for name, parser in action.choices.items()
    }
    family = {name: next(a for a in commands[name]._actions if a.dest == "family") for name in ("make-test-model", "fetch-model")}
    assert tuple(family["make-test-model"].choices) == families.TEST_MODEL_FAMILIES
    assert family["make-test-model"].default == families.DEFAULT_TEST_MODEL_FAMILY
    assert tuple(family["fetch-model"].choices) == families.HUB_FAMILIES


def test_the_test_model_names():
    assert families.test_model_name("fair-esm", 2, 32, 4, 0) == "esm2_t2_32d_4h_seed0_random.pt"  # fair-esm picks ESM2 by the name
    assert families.test_model_name("bert", 2, 32, 4, 7) == "bert_t2_32d_4h_seed7_random"
    # The workflow's wildcard constraint and output pattern say the same.
    assert families.wildcard_pattern(families.HUB_TEST_MODEL_FAMILIES) == "esm|bert|albert|t5|esmc"
    assert families.test_model_name("fair-esm", "{layers}", "{dim}", "{heads}", "{seed}") in (REPO / "workflow" / "rules" / "models.smk").read_text()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: families.get("esm3"), r"^model family 'esm3' is not known; use one of fair-esm, esm, bert, albert, t5, ankh, esmc$"),
        (lambda: families.test_model_name("ankh", 2, 32, 4, 0), r"^test model: family 'ankh' has no test model; use one of fair-esm, esm, "),
    ],
)
def test_unknown_families_are_named(call, message):
    with pytest.raises(ModelError, match=message):
        call()


def test_every_family_names_loader_code_that_exists():
    """The registry holds names as strings (so it imports no torch); each must name real code."""
    import transformers

    from plmexit.models import hub

    for family in families.REGISTRY.values():
        assert importlib.util.find_spec(family.loader) is not None, family.name
        if family.backend == families.TRANSFORMERS:
            assert family.model_types and hasattr(transformers, family.encoder_class), family.name
            if family.masked_lm is not None:
                assert hasattr(transformers, family.masked_lm.cls), family.name
    assert tuple(hub._WRITERS) == families.HUB_TEST_MODEL_FAMILIES  # a writer for every transformers test model, no other


def test_shared_blocks_are_listed_once_per_application():
    """ALBERT's forward runs group ``int(i / (layers / groups))`` for layer ``i``."""
    first, second = object(), object()
    encoder = SimpleNamespace(
        config=SimpleNamespace(num_hidden_layers=4, num_hidden_groups=2),
        encoder=SimpleNamespace(albert_layer_groups=[SimpleNamespace(albert_layers=[first]), SimpleNamespace(albert_layers=[second])]),
    )
    assert families.run_order_blocks(encoder, "albert") == [first, first, second, second]
    assert families.run_order_blocks(SimpleNamespace(layers=[first, second]), "esmc") == [first, second]
