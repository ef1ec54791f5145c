"""The config schema, the shipped configs and the config -> rule-arguments plan."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from plmexit.errors import ConfigError
from plmexit.workflow import Plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def load(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(SCHEMA), set_default=True)
    return config


def schema_properties(node: dict, path: str = ""):
    """Yield (dotted path, schema) for every property in the schema, through arrays and objects."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}{name}", sub
        yield from schema_properties(sub, f"{path}{name}.")
    if "items" in node:
        yield from schema_properties(node["items"], path)


def test_every_key_has_a_description_and_is_documented():
    schema = yaml.safe_load(SCHEMA.read_text())
    readme = (REPO / "config" / "README.md").read_text()
    properties = list(schema_properties(schema))
    assert len(properties) > 30
    for path, sub in properties:
        assert sub.get("description"), f"{path} has no description"
        assert re.search(rf"\b{re.escape(path.split('.')[-1])}\b", readme), f"{path} is not in config/README.md"


def test_objects_reject_unknown_keys():
    schema = yaml.safe_load(SCHEMA.read_text())
    objects = [schema] + [sub for _, sub in schema_properties(schema) if sub.get("type") == "object"]
    objects += [sub["items"] for _, sub in schema_properties(schema) if sub.get("type") == "array" and sub["items"].get("type") == "object"]
    for node in objects:
        assert node.get("additionalProperties") is False, node.get("description")


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_shipped_configs_validate_and_get_defaults(name):
    config = load(name)
    assert config["embed"]["truncate"] == 1022 and config["probe"]["inner_folds"] == 3
    assert config["select"]["tolerance"] == 0.0
    assert all("min_class_size" in task for task in config["tasks"])


def test_default_config_uses_esm2_8m_with_its_published_hash():
    (model,) = load("config.yaml")["models"]
    assert model["name"] == "esm2_t6_8M_UR50D"
    assert model["sha256"] == "c3c1145126ec08895c39c24a5df5e6f899441bf641eb09c72504ef9b7acd9e40"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["embed"].__setitem__("trunacte", 5), "trunacte"),
        (lambda c: c["tasks"][0].__setitem__("type", "regresion"), "regresion"),
        (lambda c: c["models"][0].__setitem__("checkpoint", "x.pt"), "is valid under each of|oneOf"),
        (lambda c: c["models"][0]["random"].__setitem__("layers", 0), "minimum|less than"),
        (lambda c: c.pop("tasks"), "tasks"),
    ],
)
def test_schema_errors_name_the_problem(edit, message):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config.setdefault("embed", {})
    edit(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config, str(SCHEMA), set_default=True)


def test_plan_targets_and_arguments():
    plan = Plan(load("test.yaml"))
    assert plan.pairs() == [("tiny_random", "BLAT_ECOLX_Stiffler_2015"), ("tiny_random", "deeploc_10class")]
    assert plan.final_targets()[0] == "results/summary/best_layers.tsv"
    assert plan.model_checkpoint("tiny_random") == ["results/models/tiny_random/esm2_t4_64d_4h_seed0_random.pt"]
    assert shlex.split(plan.fetch_model_args("tiny_random")) == ["--checkpoint", "results/models/tiny_random/esm2_t4_64d_4h_seed0_random.pt"]
    prepare = shlex.split(plan.prepare_args("deeploc_10class"))
    assert prepare[prepare.index("--label-regex") + 1] == r"^\S+\s+(?P<label>\S+)-[MSU]\b"
    assert "--fold-column" not in prepare and prepare[prepare.index("--cv-folds") + 1] == "5"
    assert plan.task_metric("BLAT_ECOLX_Stiffler_2015") == "spearman"
    assert plan.task_metric("deeploc_10class") == "accuracy"
    probe = shlex.split(plan.probe_args("deeploc_10class"))
    assert probe[:4] == ["--type", "classification", "--metric", "accuracy"]


def test_plan_named_model_arguments():
    plan = Plan(load("config.yaml"))
    assert plan.model_checkpoint("esm2_8M") == []
    assert shlex.split(plan.fetch_model_args("esm2_8M")) == [
        "--name", "esm2_t6_8M_UR50D", "--sha256", "c3c1145126ec08895c39c24a5df5e6f899441bf641eb09c72504ef9b7acd9e40",
    ]


def test_duplicate_ids_are_a_config_error():
    config = load("test.yaml")
    config["tasks"].append(copy.deepcopy(config["tasks"][0]))
    with pytest.raises(ConfigError, match=r"tasks\[2\]\.id 'BLAT_ECOLX_Stiffler_2015' is used twice"):
        Plan(config)


def test_plan_embedding_shards_and_arguments():
    config = load("test.yaml")
    plan = Plan(config)
    assert plan.embedding_shards("tiny_random", "deeploc_10class") == [
        "results/embeddings/tiny_random/deeploc_10class.shards/0-of-2.h5", "results/embeddings/tiny_random/deeploc_10class.shards/1-of-2.h5",
    ]
    assert shlex.split(plan.embed_args()) == [
        "--dtype", "float16", "--max-tokens", "4096", "--truncate", "1022", "--layer-norm", "raw", "--precision", "float32",
        "--long-sequences", "truncate", "--window", "1022", "--overlap", "256", "--shards", "2",
    ]


def test_window_overlap_not_below_the_window_is_a_config_error():
    config = load("test.yaml")
    config["embed"].update(long_sequences="window", window=100, overlap=100)
    with pytest.raises(ConfigError, match=r"embed.overlap 100 must be less than embed.window 100; lower embed.overlap"):
        Plan(config).embed_args()
