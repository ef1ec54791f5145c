"""Turn a validated config into the workflow's targets and each rule's command-line arguments.

Invariant: the Snakemake rules hold no logic; every decision that depends on config (which
models and tasks exist, where their inputs are, which flags a step gets) is made here, from the
config as validated by ``workflow/schemas/config.schema.yaml`` (defaults already filled in). Only
the standard library is imported, so building the DAG stays fast.
"""

from __future__ import annotations

import shlex

from plmexit.errors import ConfigError

RESULTS = "results"
DEFAULT_SELECTION_METRIC = {"regression": "spearman", "classification": "accuracy"}


def _by_id(entries: list[dict], section: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for position, entry in enumerate(entries):
        if entry["id"] in found:
            raise ConfigError(f"config: {section}[{position}].id {entry['id']!r} is used twice; give every entry of {section} its own id")
        found[entry["id"]] = entry
    return found


class Plan:
    """The models x tasks grid of one config and the arguments of every step."""

    def __init__(self, config: dict):
        self.config = config
        self.models = _by_id(config["models"], "models")
        self.tasks = _by_id(config["tasks"], "tasks")

    # targets -----------------------------------------------------------------------------------
    def pairs(self) -> list[tuple[str, str]]:
        return [(model, task) for model in self.models for task in self.tasks]

    def selections(self) -> list[str]:
        return [f"{RESULTS}/selection/{m}/{t}.json" for m, t in self.pairs()]

    def figures(self) -> list[str]:
        return [f"{RESULTS}/figures/{m}/{t}.png" for m, t in self.pairs()]

    def final_targets(self) -> list[str]:
        return [
            f"{RESULTS}/summary/best_layers.tsv", f"{RESULTS}/summary/across_tasks.tsv",
            f"{RESULTS}/figures/gain_vs_compute.png", *self.figures(),
        ]

    # models ------------------------------------------------------------------------------------
    def test_model_checkpoint(self, model: str) -> str:
        """Where ``make-test-model`` writes a config-declared random model."""
        r = self.models[model]["random"]
        return f"{RESULTS}/models/{model}/esm2_t{r['layers']}_{r['dim']}d_{r['heads']}h_seed{r['seed']}_random.pt"

    def test_model_args(self, model: str) -> str:
        r = self.models[model]["random"]
        return shlex.join(["--layers", str(r["layers"]), "--dim", str(r["dim"]), "--heads", str(r["heads"]), "--seed", str(r["seed"])])

    def model_checkpoint(self, model: str) -> list[str]:
        """Local checkpoint the manifest depends on ([] for a fair-esm download)."""
        entry = self.models[model]
        if "random" in entry:
            return [self.test_model_checkpoint(model)]
        return [entry["checkpoint"]] if "checkpoint" in entry else []

    def fetch_model_args(self, model: str) -> str:
        entry = self.models[model]
        if "name" in entry:
            args = ["--name", entry["name"]] + (["--url", entry["url"]] if "url" in entry else [])
        else:
            args = ["--checkpoint", self.model_checkpoint(model)[0]]
        if "sha256" in entry:
            args += ["--sha256", entry["sha256"]]
        return shlex.join(args)

    # tasks -------------------------------------------------------------------------------------
    def task_path(self, task: str) -> str:
        return self.tasks[task]["path"]

    def task_type(self, task: str) -> str:
        return self.tasks[task]["type"]

    def task_metric(self, task: str) -> str:
        entry = self.tasks[task]
        return entry.get("metric") or DEFAULT_SELECTION_METRIC[entry["type"]]

    def prepare_args(self, task: str) -> str:
        entry = self.tasks[task]
        args = ["--name", task, "--format", entry["kind"], "--path", entry["path"], "--type", entry["type"]]
        for key in ("sequence_column", "label_column", "id_column", "fold_column", "label_regex", "max_sequences", "min_class_size"):
            if entry.get(key) is not None:
                args += ["--" + key.replace("_", "-"), str(entry[key])]
        args += ["--cv-folds", str(self.config["probe"]["cv_folds"]), "--seed", str(self.config["seed"])]
        return shlex.join(args)

    # steps -------------------------------------------------------------------------------------
    def embed_args(self) -> str:
        e = self.config["embed"]
        if e["long_sequences"] == "window" and e["overlap"] >= e["window"]:
            raise ConfigError(f"config: embed.overlap {e['overlap']} must be less than embed.window {e['window']}; lower embed.overlap")
        return shlex.join(
            ["--dtype", e["dtype"], "--max-tokens", str(e["max_tokens"]), "--truncate", str(e["truncate"]), "--layer-norm", e["layer_norm"],
             "--precision", e["precision"], "--long-sequences", e["long_sequences"], "--window", str(e["window"]), "--overlap", str(e["overlap"]),
             "--shards", str(e["shards"])]
        )

    def embedding_shards(self, model: str, task: str) -> list[str]:
        """Shard stores of one (model, task), one Snakemake job each; gathered into its store."""
        n = self.config["embed"]["shards"]
        return [f"{RESULTS}/embeddings/{model}/{task}.shards/{k}-of-{n}.h5" for k in range(n)]

    def probe_args(self, task: str) -> str:
        p = self.config["probe"]
        return shlex.join(
            [
                "--type", self.task_type(task), "--metric", self.task_metric(task),
                "--alphas", ",".join(str(a) for a in p["ridge_alphas"]),
                "--cs", ",".join(str(c) for c in p["logistic_cs"]),
                "--inner-folds", str(p["inner_folds"]), "--seed", str(self.config["seed"]),
            ]
        )

    def cost_args(self) -> str:
        c = self.config["cost"]
        return shlex.join(
            ["--truncate", str(self.config["embed"]["truncate"]), "--sample-sequences", str(c["sample_sequences"]),
             "--repeats", str(c["repeats"]), "--seed", str(self.config["seed"])]
        )

    def select_args(self, task: str) -> str:
        s = self.config["select"]
        return shlex.join(
            ["--metric", self.task_metric(task), "--tolerance", str(s["tolerance"]), "--bootstrap", str(s["bootstrap"]), "--seed", str(self.config["seed"])]
        )

    def summarize_args(self) -> str:
        return shlex.join(["--bootstrap", str(self.config["select"]["bootstrap"]), "--seed", str(self.config["seed"])])
