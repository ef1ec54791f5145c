"""One declaration per setting: each config setting's default, type, flag and help, written once.

Invariant: standard library only (no torch, numpy or pandas; of plmexit only the errors and the model
families' registry, for ESM2's window), so the command line, the planner and
the steps all read the settings from here at no import cost. A frozen dataclass per step's config
settings; each field is made by ``setting`` and names its config key. From a dataclass the command
line builds its arguments (``add_arguments``), the workflow builds each rule's flags (``flags``,
through ``plmexit.pipeline.flags``) and a test holds the config schema's defaults to the fields'.
A check that involves more than one setting lives in the dataclass's ``check``, once.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from plmexit.errors import EmbedError
from plmexit.models.families import ESM2_MAX_RESIDUES

LONG_SEQUENCE_MODES = ("truncate", "window")
# Which forward computes the hidden states (``embedding.engine.make_encoder``); both pool, window, batch,
# store and time the same way. ``reference`` is the way around the fused encoder until it has been run
# on a lab's accelerator: fair-esm's own ESM2 modules, or transformers' own forward for a hub model.
EMBED_ENGINES = {
    "fast": "plmexit's fused ESM2 encoder for ESM2 weights (either format), the model's own forward for other families",
    "reference": "the model's own forward for every model: fair-esm's ESM2 modules (as scripts/extract.py runs them) "
    "or the transformers model's, each block's output pooled by forward hooks",
}
PRECISION_NAMES = ("float32", "bfloat16", "float16", "int8")
# "Final norm" is each family's norm after the last block (ESM2: emb_layer_norm_after; ESM-C: norm;
# T5: encoder.final_layer_norm); BERT and ALBERT have none (post-LN blocks), so both conventions
# are the same for them (models.families: final_norm).
LAYER_NORM_CONVENTIONS = {
    "raw": "hidden states as the model returns them: raw residual stream for layers 0..L-1, "
    "the final norm (ESM2: emb_layer_norm_after) applied to layer L only",
    "final": "the final norm (ESM2: emb_layer_norm_after) applied to every layer 0..L, so probing layer k equals "
    "shipping the first k blocks plus the final norm",
}
# Regularisation grids wide enough for standardised features of any ESM2 width (320 to 5120).
# Half-decade steps, written as the config schema writes its defaults (tests/pipeline/test_config.py
# holds the schema to these), so `plmexit probe` run by hand fits the pipeline's grid.
DEFAULT_RIDGE_ALPHAS = (0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0, 316.0, 1000.0, 3160.0, 10000.0, 31600.0, 100000.0)
DEFAULT_LOGISTIC_CS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)  # 10^-4 .. 10^1, one decade apart
# How a ridge probe's training part is split to choose alpha and score the layer: exact
# leave-one-out over variants, or K folds of whole mutated positions built by the rule of
# ProteinGym's modulo or contiguous scheme (``folds.inner_groups``).
INNER_SPLITS = ("loo", "modulo", "contiguous")
EXIT_GATES = ("probability", "margin", "entropy", "patience")
# Where a row whose gate never passes goes, and whose prediction is the reference (``exit.controller``).
FALLBACKS = ("full", "deployed")


# Argument types: each turns a command-line word into a value or says what it expected.
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 2, got {text!r}")
    return value


def fraction_below_one(text: str) -> float:
    """A fraction in [0, 1): a part held out, where 0 holds out nothing."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def fraction_above_zero(text: str) -> float:
    """A fraction in (0, 1]: a share that must take something."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (a probe grid)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def setting(
    default: Any, help: str, *, key: str, flag: str | None = None, type: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None, comma: bool = False,
) -> Any:
    """A dataclass field that is a config setting.

    ``key`` is its config key (``section.name``, or ``seed``); ``flag`` its command-line flag
    (default ``--`` and the field name with dashes); ``type`` the argument type (default the
    default's). A tuple default is a list: space-separated words on the command line, or one
    comma-separated word with ``comma``. A boolean whose default is true is turned off by ``flag``.
    """
    metadata = {"help": help, "key": key, "flag": flag, "type": type, "choices": choices, "comma": comma}
    return field(default=default, metadata=metadata)


def seed_setting(help: str) -> Any:
    """The config's one ``seed``, as each step uses it."""
    return setting(0, help, key="seed")


# A setting two steps read is declared once, here, and each dataclass that takes it calls its function.
def mask_fraction_setting() -> Any:
    return setting(0.15, "fraction of each sequence's residues masked (as ESM2 was trained)", key="depth.mask_fraction")


def inner_folds_setting() -> Any:
    return setting(
        3, "inner CV folds: the probes' (classification, and --inner-split modulo/contiguous), whose out-of-fold outputs calibrate the exit",
        key="probe.inner_folds", type=at_least_two,
    )


class Settings:
    """What every settings dataclass can do with the fields ``setting`` made (others, such as a device, are left out)."""

    @classmethod
    def settings_fields(cls, only: tuple[str, ...] | None = None) -> list:
        found = [f for f in fields(cls) if "key" in f.metadata]
        if only is not None:
            unknown = set(only) - {f.name for f in found}
            if unknown:
                raise ValueError(f"{cls.__name__} has no setting {sorted(unknown)[0]!r}")
            found = [f for f in found if f.name in only]
        return found

    @staticmethod
    def flag(f) -> str:
        return f.metadata["flag"] or "--" + f.name.replace("_", "-")

    @classmethod
    def from_config(cls, config: dict, **extra):
        """The settings a validated config gives (a key it lacks takes the field's default), checked."""
        values = {}
        for f in cls.settings_fields():
            section = config
            *path, last = f.metadata["key"].split(".")
            for part in path:
                section = section.get(part, {})
            if last in section:
                values[f.name] = tuple(section[last]) if isinstance(f.default, tuple) else section[last]
        settings = cls(**values, **extra)
        settings.check()
        return settings

    @classmethod
    def from_args(cls, args: argparse.Namespace, **extra):
        """The settings a command line parsed by ``add_arguments`` gives, checked."""
        values = {f.name: getattr(args, f.name) for f in cls.settings_fields()}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        settings = cls(**values, **extra)
        settings.check()
        return settings

    def check(self) -> None:
        """Checks that involve more than one setting (each setting's own range is its type's and the schema's)."""

    @classmethod
    def add_arguments(cls, parser, only: tuple[str, ...] | None = None, required: bool = False) -> None:
        """An argument per setting (or per setting in ``only``); ``required``: no default, the flag must be given."""
        for f in cls.settings_fields(only):
            meta, kwargs = f.metadata, {"dest": f.name}
            if not isinstance(f.default, bool) and not meta["choices"]:
                kwargs["metavar"] = cls.flag(f).lstrip("-").replace("-", "_").upper()
            default_text = ",".join(map(str, f.default)) if meta["comma"] else (
                " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            )
            if isinstance(f.default, bool):
                kwargs.update(action="store_false" if f.default else "store_true", default=f.default, help=meta["help"])
                parser.add_argument(cls.flag(f), **kwargs)
                continue
            kwargs["type"] = meta["type"] or (float if meta["comma"] else type(f.default[0] if isinstance(f.default, tuple) else f.default))
            if isinstance(f.default, tuple) and not meta["comma"]:
                kwargs["nargs"] = "+"
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
            if required:
                kwargs.update(required=True, help=meta["help"])
            else:
                kwargs.update(default=list(f.default) if "nargs" in kwargs else f.default, help=f"{meta['help']} (default {default_text})")
            parser.add_argument(cls.flag(f), **kwargs)

    def flags(self, only: tuple[str, ...] | None = None) -> str:
        """The settings as the command line takes them (``--flag value ...``), shell-quoted, for a rule's command."""
        words: list[str] = []
        for f in self.settings_fields(only):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                words += [self.flag(f)] if value != f.default else []
            elif f.metadata["comma"]:
                words += [self.flag(f), ",".join(map(str, value))]
            elif isinstance(value, tuple):
                words += [self.flag(f), *map(str, value)]
            else:
                words += [self.flag(f), str(value)]
        return shlex.join(words)


@dataclass(frozen=True)
class EmbedSettings(Settings):
    """How to embed (config ``embed``); every field is recorded in the store. ``device`` is no config
    setting (the profile and the command line choose it) and has no flag here."""

    max_tokens: int = setting(4096, "padded tokens per batch", key="embed.max_tokens", type=positive_int)
    truncate: int = setting(ESM2_MAX_RESIDUES, "keep the first N residues", key="embed.truncate", type=positive_int)
    layer_norm: str = setting(
        "raw", "layer-norm convention for intermediate layers", key="embed.layer_norm", choices=tuple(LAYER_NORM_CONVENTIONS),
    )
    device: str = "cpu"
    precision: str = setting(
        "float32", "compute precision of the forward pass (bfloat16/float16 on GPUs and on CPUs with native support, int8 "
        "dynamic quantisation on CPUs; where unsupported, float32 with a logged reason); pooling is float32",
        key="embed.precision", choices=PRECISION_NAMES,
    )
    long_sequences: str = setting(
        "truncate", "truncate (keep the first --truncate residues) or window (average over sliding windows)",
        key="embed.long_sequences", choices=LONG_SEQUENCE_MODES,
    )
    window: int = setting(ESM2_MAX_RESIDUES, "window mode: residues per window", key="embed.window", type=positive_int)
    overlap: int = setting(256, "window mode: residues shared by consecutive windows", key="embed.overlap", type=int)
    engine: str = setting(
        "fast", "fast: plmexit's fused ESM2 encoder where it applies; reference: the model's own forward (fair-esm's or transformers'), "
        "pooled, windowed and timed the same way", key="embed.engine", choices=tuple(EMBED_ENGINES),
    )

    def check(self) -> None:
        if self.engine not in EMBED_ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; use one of {', '.join(EMBED_ENGINES)}")
        if self.layer_norm not in LAYER_NORM_CONVENTIONS:
            raise ValueError(f"unknown layer_norm {self.layer_norm!r}")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISION_NAMES)}")
        if self.long_sequences not in LONG_SEQUENCE_MODES:
            raise ValueError(f"unknown long_sequences mode {self.long_sequences!r}; use one of {', '.join(LONG_SEQUENCE_MODES)}")
        if self.long_sequences == "window" and not 0 <= self.overlap < self.window:
            raise EmbedError(
                f"embed.overlap {self.overlap} must be at least 0 and less than embed.window {self.window}; lower embed.overlap"
            )

    def long_sequence_description(self) -> str:
        if self.long_sequences == "window":
            return (
                f"sliding windows of {self.window} residues overlapping by {self.overlap} (each with its own BOS/EOS); "
                "per-residue states averaged over the windows covering them, then pooled"
            )
        return f"truncated to the first {self.truncate} residues"


@dataclass(frozen=True)
class CostSettings(Settings):
    """The measured forward time per depth (config ``cost``)."""

    sample_sequences: int = setting(8, "sequences in the timed batch", key="cost.sample_sequences", type=positive_int)
    repeats: int = setting(
        3, "timed repeats, each one forward per batch timestamped after every layer; the median per depth is kept", key="cost.repeats", type=positive_int,
    )
    seed: int = seed_setting("seed for the sample")


@dataclass(frozen=True)
class PrepareSettings(Settings):
    """How a task without folds of its own is cut into folds (config ``probe.cv_folds``, ``seed``)."""

    cv_folds: int = setting(5, "folds when the file has none", key="probe.cv_folds", type=at_least_two)
    seed: int = seed_setting("seed for subsampling and folds")


@dataclass(frozen=True)
class ProbeGrid(Settings):
    """The probes' hyperparameter grids and inner folds (config ``probe``); the task chooses type, metric and inner split."""

    ridge_alphas: tuple[float, ...] = setting(
        DEFAULT_RIDGE_ALPHAS, "ridge regularisation grid, comma-separated", key="probe.ridge_alphas", flag="--alphas",
        type=floats, comma=True,
    )
    logistic_cs: tuple[float, ...] = setting(
        DEFAULT_LOGISTIC_CS, "logistic regression C grid, comma-separated", key="probe.logistic_cs", flag="--cs", type=floats, comma=True,
    )
    inner_folds: int = inner_folds_setting()
    seed: int = seed_setting("seed for the inner splits")


@dataclass(frozen=True)
class SelectSettings(Settings):
    """How the layer is chosen and its uncertainty reported (config ``select``)."""

    tolerance: float = setting(0.0, "prefer the shallowest layer within this much of the best inner score", key="select.tolerance")
    bootstrap: int = setting(1000, "bootstrap resamples for the gain's interval (select) or over tasks (summarize)", key="select.bootstrap", type=positive_int)
    seed: int = seed_setting("bootstrap seed")


@dataclass(frozen=True)
class LensSettings(Settings):
    """The logit lens's sample (config ``depth``)."""

    sample: int = setting(64, "distinct sequences to sample", key="depth.sample", type=positive_int)
    mask_fraction: float = mask_fraction_setting()
    skip_blocks: bool = setting(
        True, "leave out the block-skipping runs (one extra forward per block)", key="depth.skip_blocks", flag="--no-skip",
    )
    seed: int = seed_setting("seed for the sample and masks")


@dataclass(frozen=True)
class ZeroShotSettings(Settings):
    """Zero-shot scoring's calibration subset (config ``depth``)."""

    calibration_fraction: float = setting(
        0.2, "seeded fraction of variants that chooses DoLa's premature layer and SLED's weights, never scored by them (0 skips both)",
        key="depth.calibration_fraction", type=fraction_below_one,
    )
    seed: int = seed_setting("seed for the calibration subset")


@dataclass(frozen=True)
class ControllerSettings(Settings):
    """The config's ``exit`` keys every controller reads, the probes' and the head's: gates, grid and risk budget."""

    gates: tuple[str, ...] = setting(EXIT_GATES, "gates to calibrate (those that fit the outputs)", key="exit.gates")
    epsilon: float = setting(
        0.1, "risk budget: rate of disagreement with the reference (exit: the reference layer; lens-exit: the final layer)",
        key="exit.epsilon",
    )
    delta: float = setting(0.1, "the guarantee holds with probability at least 1 - delta", key="exit.delta")
    n_thresholds: int = setting(50, "probability, margin and entropy thresholds tested", key="exit.n_thresholds", type=at_least_two)
    max_patience: int = setting(4, "largest patience tested, in layers", key="exit.max_patience", type=positive_int)
    first_layer: int = setting(1, "shallowest layer a row, position or sequence may exit at", key="exit.first_layer")
    seed: int = seed_setting("seed for the inner split (exit) or the sample, masks and calibration split (lens-exit)")


@dataclass(frozen=True)
class ExitSettings(ControllerSettings):
    """The config's ``exit`` section for the probes' exit (see the schema for each key)."""

    fallback: str = setting(
        "full", "where rows that never pass go, and what they are compared with", key="exit.fallback", choices=FALLBACKS,
    )
    tolerance: float = setting(
        0.1, "regression: patience and disagreement tolerance, in training-target SDs", key="exit.tolerance",
    )
    inner_folds: int = inner_folds_setting()


@dataclass(frozen=True)
class LensExitSettings(ControllerSettings):
    """The config's ``exit`` keys the head's exit reads (``lens_sample``, ``lens_calibration_fraction``, the gates and
    the budget) and ``depth.mask_fraction``; see the schema for each."""

    sample: int = setting(256, "distinct sequences to sample", key="exit.lens_sample", type=positive_int)
    mask_fraction: float = mask_fraction_setting()
    calibration_fraction: float = setting(
        0.5, "seeded fraction of the sampled sequences that calibrates; the others are reported on",
        key="exit.lens_calibration_fraction",
    )


@dataclass(frozen=True)
class TimingSettings(Settings):
    """The exit controllers' measured wall clock (config ``exit.timing_*``)."""

    sample_sequences: int = setting(64, "test sequences timed, a seeded sample", key="exit.timing_sequences", type=positive_int)
    repeats: int = setting(3, "timed repeats after one warm-up; the median is kept", key="exit.timing_repeats", type=positive_int)
    seed: int = seed_setting("seed for the sample")


# ProteinGym's published archives of the release whose sha256 plmexit pins (plmexit.data.sources.PROTEINGYM_ARCHIVES;
# tests/data/test_archives.py holds these to it).
PROTEINGYM_ARCHIVE_URL = "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.1/{}.zip"


@dataclass(frozen=True)
class ArchiveSettings(Settings):
    """Where ProteinGym's released archives come from (config ``data``): a URL or a local path each, and the
    file that records the sha256 of an archive plmexit cannot pin (any other URL or file) on first use."""

    proteingym_cv_folds: str = setting(
        PROTEINGYM_ARCHIVE_URL.format("cv_folds_singles_substitutions"),
        "URL or local path of ProteinGym's cv_folds_singles_substitutions.zip", key="data.proteingym_cv_folds",
    )
    proteingym_substitutions: str = setting(
        PROTEINGYM_ARCHIVE_URL.format("DMS_ProteinGym_substitutions"),
        "URL or local path of ProteinGym's DMS_ProteinGym_substitutions.zip", key="data.proteingym_substitutions",
    )
    archive_hashes: str = setting(
        "config/archive_hashes.tsv", "where the sha256 of an archive plmexit cannot pin is recorded on first use (commit it: later runs verify against it)",
        key="data.archive_hashes",
    )

    def source(self, archive: str) -> str:
        """The URL or path the config gives for an archive (by its published stem)."""
        sources = {"cv_folds_singles_substitutions": self.proteingym_cv_folds, "DMS_ProteinGym_substitutions": self.proteingym_substitutions}
        if archive not in sources:
            raise ValueError(f"unknown ProteinGym archive {archive!r}; use one of {', '.join(sources)}")
        return sources[archive]


# Every settings dataclass, for the test that holds the schema's defaults to them.
ALL_SETTINGS: tuple[type[Settings], ...] = (
    EmbedSettings, CostSettings, PrepareSettings, ProbeGrid, SelectSettings, LensSettings, ZeroShotSettings, ExitSettings,
    LensExitSettings, TimingSettings, ArchiveSettings,
)

