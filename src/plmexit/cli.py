"""Command line: one subcommand per pipeline step, each a thin wrapper over one library function.

Invariant: this is the only module that reads argv, prints or exits. Expected errors
(``PlmexitError``) become one line on stderr and exit status 1; logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plmexit import __version__
from plmexit.errors import PlmexitError
from plmexit.models import families


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value



def _add_controller_arguments(p: argparse.ArgumentParser, reference: str, unit: str) -> None:
    """The gates, grid and risk budget every early-exit controller takes (``exit`` and ``lens-exit``)."""
    p.add_argument("--gates", nargs="+", default=["probability", "margin", "entropy", "patience"], help="gates to calibrate (those that fit the outputs)")
    p.add_argument("--epsilon", type=float, default=0.1, help=f"risk budget: rate of disagreement with {reference} (default 0.1)")
    p.add_argument("--delta", type=float, default=0.1, help="the guarantee holds with probability at least 1 - delta (default 0.1)")
    p.add_argument("--n-thresholds", type=_at_least_two, default=50, help="probability, margin and entropy thresholds tested (default 50)")
    p.add_argument("--max-patience", type=_positive_int, default=4, help="largest patience tested, in layers (default 4)")
    p.add_argument("--first-layer", type=int, default=1, help=f"shallowest layer {unit} may exit at (default 1)")

def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 2, got {text!r}")
    return value


def cmd_make_test_model(args) -> None:
    from plmexit.models.manifest import make_test_model

    path = make_test_model(args.family, args.layers, args.dim, args.heads, args.seed, args.out)
    print(path)


def cmd_convert_model(args) -> None:
    from plmexit.models.hub import convert_fair_esm_checkpoint

    print(convert_fair_esm_checkpoint(args.checkpoint, args.out, args.sha256))


def cmd_fetch_model(args) -> None:
    from plmexit.pipeline.model_steps import fetch_model

    fetch_model(
        args.out, args.id, name=args.name, checkpoint=args.checkpoint, sha256=args.sha256, url=args.url, cache_dir=args.cache_dir,
        hub=args.hub, revision=args.revision, path=args.path, family=args.family,
    )


def cmd_fetch_data(args) -> None:
    from plmexit.pipeline.task_steps import fetch_data

    fetch_data(args.file, args.out, args.local_dir, args.base_url)


def cmd_choose_assays(args) -> None:
    from plmexit.pipeline.task_steps import choose_assays

    choose_assays(args.reference, args.out, args.selection_type, args.max_length, args.max_variants)


def cmd_prepare(args) -> None:
    from plmexit.data.formats import FILE_FIELDS
    from plmexit.data.tasks import TaskSpec
    from plmexit.pipeline.task_steps import prepare_task

    paths = {key: Path(getattr(args, key)) for key in FILE_FIELDS if getattr(args, key)}
    spec = TaskSpec(
        name=args.name, format=args.format, path=Path(args.path), type=args.type,
        sequence_column=args.sequence_column, label_column=args.label_column, id_column=args.id_column,
        fold_column=args.fold_column, label_regex=args.label_regex, dms_id=args.dms_id, fold_scheme=args.fold_scheme,
        split=args.split, localization=args.labels, max_sequences=args.max_sequences,
        min_class_size=args.min_class_size, cv_folds=args.cv_folds, seed=args.seed, folds=args.folds,
        homology_identity=args.homology_identity, **paths,
    )
    prepare_task(spec, args.out, args.info_out)


class ProgressBar:
    """A one-line progress bar with tokens per second on stderr: redrawn in place on a terminal,
    a new line every ``every_s`` seconds otherwise (Snakemake writes stderr to the rule's log)."""

    WIDTH = 30

    def __init__(self, stream, every_s: float = 10.0):
        self.stream, self.every_s = stream, every_s
        self.tty = stream.isatty()
        self.last = None

    def __call__(self, done: int, total: int, seconds: float) -> None:
        finished = done >= total
        if not finished and self.last is not None and seconds - self.last < (0.25 if self.tty else self.every_s):
            return
        self.last = seconds
        fraction = min(done / total, 1.0) if total else 1.0
        rate = done / seconds if seconds > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        filled = int(round(fraction * self.WIDTH))
        line = (
            f"embed [{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * fraction:5.1f}% "
            f"{done:,}/{total:,} tokens, {rate:,.0f} tokens/s, {seconds:,.0f} s elapsed"
            + ("" if finished or eta != eta else f", about {eta:,.0f} s left")
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _embed_settings(args):
    from plmexit.embedding.options import EmbedSettings
    from plmexit.pipeline.model_steps import resolve_device

    return EmbedSettings(
        max_tokens=args.max_tokens, truncate=args.truncate, layer_norm=args.layer_norm, device=resolve_device(args.device),
        precision=args.precision, long_sequences=args.long_sequences, window=args.window, overlap=args.overlap,
    )


def cmd_embed(args) -> None:
    import torch

    from plmexit.pipeline.model_steps import embed_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.shard is None) != (args.shards is None):
        raise PlmexitError("--shard and --shards go together; give both (a shard index and the task's shard count) or neither")
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    embed_task(args.model, args.task, args.out, _embed_settings(args), args.dtype, args.shard, args.shards or 1, progress, args.variant_crop)


def cmd_gather(args) -> None:
    from plmexit.pipeline.probe_steps import gather_embeddings

    gather_embeddings(args.shards, args.out)


def cmd_cost(args) -> None:
    import torch

    from plmexit.pipeline.model_steps import measure_cost

    if args.threads:
        torch.set_num_threads(args.threads)
    measure_cost(args.model, args.task, args.out, _embed_settings(args), args.sample_sequences, args.repeats, args.seed, args.variant_crop)


def cmd_probe(args) -> None:
    from plmexit.pipeline.probe_steps import probe_task
    from plmexit.probing.probes import ProbeSettings

    settings = ProbeSettings(
        task_type=args.type, selection_metric=args.metric, ridge_alphas=args.alphas, logistic_cs=args.cs,
        inner_folds=args.inner_folds, seed=args.seed, inner_split=args.inner_split,
    )
    probe_task(
        args.embeddings, args.task, args.model_id, args.task_name, settings, args.out, args.predictions, args.threads,
        args.baseline_features, args.baselines_out, args.baseline_predictions,
    )


def cmd_select(args) -> None:
    from plmexit.pipeline.select_steps import select_task

    select_task(
        args.probes, args.predictions, args.cost, args.task_info, args.type, args.metric, args.tolerance,
        args.bootstrap, args.seed, args.out, args.baselines, args.baseline_predictions,
    )


def cmd_summarize(args) -> None:
    from plmexit.pipeline.select_steps import summarize_selections

    summarize_selections(args.selections, args.out, args.bootstrap, args.seed, args.across_out)


def cmd_summarize_proteingym(args) -> None:
    from plmexit.pipeline.select_steps import summarize_proteingym

    summarize_proteingym(args.selections, args.predictions, args.task_tables, args.out)


def cmd_export(args) -> None:
    from plmexit.pipeline.export_steps import export_model

    export_model(args.model, args.embeddings, args.task, args.selection, args.cost, args.type, args.out)


def cmd_predict(args) -> None:
    import torch

    from plmexit.pipeline.export_steps import predict
    from plmexit.pipeline.model_steps import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    predict(args.export, args.input, args.out, resolve_device(args.device))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def cmd_lens(args) -> None:
    import torch

    from plmexit.pipeline.depth_steps import lens_task
    from plmexit.pipeline.model_steps import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    lens_task(
        args.model, args.task, args.out, args.skip_out, args.exit_out, args.info_out, args.task_name,
        args.sample, args.mask_fraction, args.seed, resolve_device(args.device), args.engine, args.max_tokens, not args.no_skip,
    )


def cmd_zero_shot(args) -> None:
    import torch

    from plmexit.pipeline.depth_steps import zero_shot_assay
    from plmexit.pipeline.model_steps import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    zero_shot_assay(
        args.model, args.assay, args.reference, args.dms_id, args.out_long, args.out_proteingym, args.info_out,
        args.calibration_fraction, args.seed, resolve_device(args.device), args.engine, args.batch_size,
    )


def _add_device_arguments(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads`` of every command that runs a model."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def _add_head_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the commands that read a model's own head at every layer (lens, zero-shot)."""
    p.add_argument("--model", required=True, help="model manifest JSON from fetch-model (its id names the model in the tables)")
    _add_device_arguments(p)
    p.add_argument(
        "--engine", choices=["exact", "fused"], default="exact",
        help="exact (default): fair-esm's own blocks, the last layer's lens is the model's logits bit for bit; "
        "fused: plmexit's fused forward, faster, equal to fp32 rounding",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the sample and masks (lens) or the calibration subset (zero-shot)")


def cmd_summarize_depth(args) -> None:
    from plmexit.pipeline.select_steps import summarize_depth

    summarize_depth(args.lens, args.zero_shot, args.selections, args.out, args.curves_out)


def cmd_plot_depth(args) -> None:
    from plmexit.pipeline.report_steps import plot_depth

    plot_depth(args.curves, args.summary, args.out)


def cmd_plot_study(args) -> None:
    from plmexit.pipeline.report_steps import plot_study

    plot_study(args.summary, args.across, args.probes, args.figures_dir, args.tables_dir)


def cmd_plot_depth_task(args) -> None:
    from plmexit.pipeline.report_steps import plot_task_depth

    plot_task_depth(args.probes, args.selection, args.out, args.lens, args.zero_shot, args.svg_out)


def cmd_plot_depth_exit(args) -> None:
    from plmexit.pipeline.report_steps import plot_depth_exit

    plot_depth_exit(args.model, args.summary, args.depth, args.exit_tables, args.out, args.pdf_out)


def cmd_exit(args) -> None:
    from plmexit.pipeline.exit_steps import ExitSettings, exit_task

    settings = ExitSettings(
        gates=tuple(args.gates), epsilon=args.epsilon, delta=args.delta, fallback=args.fallback, n_thresholds=args.n_thresholds,
        max_patience=args.max_patience, first_layer=args.first_layer, tolerance=args.tolerance, inner_folds=args.inner_folds, seed=args.seed,
    )
    exit_task(
        args.embeddings, args.task, args.probes, args.selection, args.cost, args.model_id, args.task_name, args.type, args.metric,
        settings, args.out, args.info_out,
    )


def cmd_exit_timing(args) -> None:
    import torch

    from plmexit.pipeline.exit_timing_steps import time_exit_task

    if args.threads:
        torch.set_num_threads(args.threads)
    time_exit_task(
        args.model, args.task, args.embeddings, args.probes, args.selection, args.exit_info, args.out, args.info_out, _embed_settings(args),
        args.sample_sequences, args.repeats, args.seed, args.variant_crop,
    )


def cmd_summarize_exit(args) -> None:
    from plmexit.pipeline.exit_steps import summarize_exit_tables

    summarize_exit_tables(args.tables, args.epsilon, args.out, args.timings)


def cmd_plot_exit(args) -> None:
    from plmexit.pipeline.exit_steps import plot_exit_table

    plot_exit_table(args.table, args.out, args.timing)


def cmd_lens_exit(args) -> None:
    import torch

    from plmexit.pipeline.lens_exit_steps import LensExitSettings, lens_exit_task
    from plmexit.pipeline.model_steps import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = LensExitSettings(
        gates=tuple(args.gates), epsilon=args.epsilon, delta=args.delta, n_thresholds=args.n_thresholds, max_patience=args.max_patience,
        first_layer=args.first_layer, sample=args.sample, mask_fraction=args.mask_fraction, calibration_fraction=args.calibration_fraction,
        seed=args.seed,
    )
    lens_exit_task(args.model, args.task, args.out, args.info_out, args.task_name, settings, resolve_device(args.device), args.engine, args.max_tokens)


def cmd_summarize_lens_exit(args) -> None:
    from plmexit.pipeline.lens_exit_steps import summarize_lens_exit_tables

    summarize_lens_exit_tables(args.tables, args.epsilon, args.out)


def cmd_plot(args) -> None:
    from plmexit.pipeline.report_steps import plot_task

    plot_task(args.probes, args.selection, args.cost, args.out)


def cmd_plot_summary(args) -> None:
    from plmexit.pipeline.report_steps import plot_summary

    plot_summary(args.summary, args.out)


def _rate(text: str) -> tuple[str, float]:
    model, _, value = text.partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not model or rate <= 0:
        raise argparse.ArgumentTypeError(f"expected MODEL=TOKENS_PER_SECOND with a positive number, got {text!r}")
    return model, rate


def cmd_estimate(args) -> None:
    import yaml

    from plmexit.errors import ConfigError
    from plmexit.pipeline.estimate import estimate
    from plmexit.pipeline.planning import Plan

    try:
        config = yaml.safe_load(Path(args.configfile).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{args.configfile}: cannot read the config ({' '.join(str(exc).split())})") from None
    table = estimate(Plan.from_config(config, args.schema), dict(args.tokens_per_second))
    print(f"{'model':<16} {'sets':>6} {'sequences':>11} {'tokens':>15} {'tokens/s':>10} {'GPU-hours':>10}  throughput")
    for row in table.itertuples():
        print(f"{row.model:<16} {row.embedding_sets:>6,} {row.sequences:>11,} {row.tokens:>15,} {row.tokens_per_second:>10,.0f} {row.gpu_hours:>10,.1f}  {row.throughput}")
    print(f"{'total':<16} {'':>6} {'':>11} {table['tokens'].sum():>15,} {'':>10} {table['gpu_hours'].sum(min_count=len(table)):>10,.1f}")
    print("Embedding only (every layer, one forward per token); cost timing, zero-shot scoring and probes come on top.")


def cmd_install_profile(args) -> None:
    from plmexit.pipeline.slurm_profile import install_profile

    dest = install_profile(args.template, args.account, args.partition, None if args.no_gpu else args.gpu_type, args.squeue_status, args.name, args.force)
    print(f"installed {dest}; run `snakemake --profile {args.name}`")


def _add_model_run_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """Arguments of the commands that run a model over a task (embed, cost): cost takes the
    embedding's settings so that it times and counts what the embedding ran."""
    from plmexit.embedding.options import ESM2_MAX_RESIDUES, LAYER_NORM_CONVENTIONS, LONG_SEQUENCE_MODES, PRECISION_NAMES

    p.add_argument("--model", required=True, help="model manifest JSON from fetch-model")
    p.add_argument("--task", required=True, help="task table TSV from prepare")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--truncate", type=_positive_int, default=ESM2_MAX_RESIDUES, help=f"keep the first N residues (default {ESM2_MAX_RESIDUES})")
    _add_device_arguments(p)
    p.add_argument("--max-tokens", type=_positive_int, default=4096, help="padded tokens per batch (default 4096)")
    p.add_argument("--layer-norm", choices=list(LAYER_NORM_CONVENTIONS), default="raw", help="layer-norm convention for intermediate layers (default raw)")
    p.add_argument("--precision", choices=list(PRECISION_NAMES), default="float32", help="compute precision of the forward pass (default float32; bfloat16/float16 on GPUs and on CPUs with native support, int8 dynamic quantisation on CPUs; where unsupported, float32 with a logged reason); pooling is float32")
    p.add_argument("--long-sequences", choices=list(LONG_SEQUENCE_MODES), default="truncate",
                   help="truncate (keep the first --truncate residues, default) or window (average over sliding windows)")
    p.add_argument("--window", type=_positive_int, default=ESM2_MAX_RESIDUES, help=f"window mode: residues per window (default {ESM2_MAX_RESIDUES})")
    p.add_argument("--overlap", type=int, default=256, help="window mode: residues shared by consecutive windows (default 256)")
    p.add_argument("--variant-crop", action="store_true",
                   help="the task is one target's substitution variants: embed all through one crop that covers every mutated position")


def build_parser() -> argparse.ArgumentParser:
    # Light modules only: every plmexit process builds this parser (pandas, scipy and scikit-learn
    # are imported by the commands that use them).
    from plmexit.data.formats import DEFAULT_HOMOLOGY_IDENTITY, FOLD_METHODS, FORMATS, TASK_TYPES
    from plmexit.pipeline.planning import FOLD_SCHEMES
    from plmexit.probing.options import DEFAULT_LOGISTIC_CS, DEFAULT_RIDGE_ALPHAS, INNER_SPLITS

    parser = argparse.ArgumentParser(
        prog="plmexit",
        description=(
            "Layer-wise probing of protein language models. The pipeline runs through Snakemake "
            "(`snakemake --cores N --configfile CONFIG` in the repository; see README.md); each command below "
            "is one step of it, which `snakemake -p` prints so it can be rerun by hand."
        ),
    )
    parser.add_argument("--version", action="version", version=f"plmexit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log", metavar="FILE",
        help="write the log to FILE instead of stderr (as every pipeline rule does); an error is still printed on stderr too, so it reaches the console",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-test-model", help="write a randomly initialised model in its family's published format (for tests and offline demos)")
    p.add_argument("--family", choices=families.TEST_MODEL_FAMILIES, default=families.DEFAULT_TEST_MODEL_FAMILY,
                   help="fair-esm (an ESM2 checkpoint file, the default) or a transformers family (a model directory)")
    p.add_argument("--layers", type=_positive_int, required=True, help="number of transformer layers")
    p.add_argument("--dim", type=_positive_int, required=True, help="embedding width (divisible by --heads)")
    p.add_argument("--heads", type=_positive_int, required=True, help="attention heads")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--out", required=True, help="directory to write esm2_t{L}_{D}d_{H}h_seed{S}_random.pt (fair-esm) or {family}_t{L}_{D}d_{H}h_seed{S}_random/ into")
    p.set_defaults(func=cmd_make_test_model)

    p = sub.add_parser("convert-model", help="write a fair-esm ESM2 checkpoint as a transformers EsmForMaskedLM directory (safetensors)")
    p.add_argument("--checkpoint", required=True, help="fair-esm checkpoint file whose name starts with esm2")
    p.add_argument("--sha256", help="expected sha256 of the checkpoint (verified before it is read)")
    p.add_argument("--out", required=True, help="directory to write config.json, model.safetensors and vocab.txt into")
    p.set_defaults(func=cmd_convert_model)

    p = sub.add_parser("fetch-model", help="download a fair-esm model or a pinned hub snapshot, or hash a local checkpoint or directory; write a model manifest")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--name", help="fair-esm ESM2 model name, e.g. esm2_t6_8M_UR50D (downloaded into the torch hub cache)")
    source.add_argument("--checkpoint", help="local fair-esm checkpoint file whose name starts with esm2")
    source.add_argument("--hub", help="transformers model on the Hugging Face hub, e.g. facebook/esm2_t6_8M_UR50D (needs --revision)")
    source.add_argument("--path", help="local transformers model directory (config.json, *.safetensors, tokenizer files)")
    p.add_argument("--revision", help="with --hub: the 40-hex commit to pin (branch names are refused)")
    p.add_argument("--family", choices=families.HUB_FAMILIES, help="transformers family (default: from config.json's model_type; ankh for Ankh's T5)")
    p.add_argument("--sha256", help="expected sha256 of the checkpoint (verified before it is used)")
    p.add_argument("--url", help="download from this URL instead of fair-esm's (a mirror); only with --name")
    p.add_argument("--cache-dir", help="directory to download into (default: torch.hub.get_dir() for fair-esm, the Hugging Face cache for --hub)")
    p.add_argument("--id", help="the model's id in every output (the config's model id; default: the model's name)")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    p.set_defaults(func=cmd_fetch_model)

    p = sub.add_parser("fetch-data", help="download an official data file (or take a local copy), sha256-verified")
    p.add_argument("--file", required=True, help="official file key, e.g. deeploc/deeploc_test_set.fasta")
    p.add_argument("--out", required=True, help="where to put it")
    p.add_argument("--local-dir", help="directory of pre-staged copies laid out by key (nothing is downloaded)")
    p.add_argument("--base-url", help="mirror laid out by key, used instead of the file's GitHub source")
    p.set_defaults(func=cmd_fetch_data)

    p = sub.add_parser("choose-assays", help="list the ProteinGym assays (DMS_ids) of the reference table that pass filters")
    p.add_argument("--reference", required=True, help="ProteinGym's DMS_substitutions.csv")
    p.add_argument("--selection-type", action="append", help="keep assays of this coarse_selection_type (repeat for several)")
    p.add_argument("--max-length", type=_positive_int, help="keep assays whose target (seq_len) is at most this long")
    p.add_argument("--max-variants", type=_positive_int, help="keep assays with at most this many variants (DMS_total_number_mutants)")
    p.add_argument("--out", required=True, help="text file: the chosen DMS_ids, one per line")
    p.set_defaults(func=cmd_choose_assays)

    p = sub.add_parser("prepare", help="read a task's files (CSV, FASTA or a benchmark's format) into a validated task table (TSV)")
    p.add_argument("--name", required=True, help="task name (used in messages)")
    p.add_argument("--format", choices=list(FORMATS), required=True, help="input format: your own csv or fasta file, or a benchmark's official format")
    p.add_argument("--path", required=True, help="main input file (a DeepSol *_src file, a FLIP splits.zip, a ProteinGym assay CSV, ...)")
    p.add_argument("--test-path", help="separate test file (csv, fasta, deeploc, deepsol): the official train/test split")
    p.add_argument("--labels-path", help="deepsol: the *_tgt labels aligned with --path")
    p.add_argument("--test-labels-path", help="deepsol: the *_tgt labels aligned with --test-path")
    p.add_argument("--annotations", help="deepfri_ec: annotation TSV (nrPDB-EC_*_annot.tsv)")
    p.add_argument("--ids-path", help="deepfri_ec: use only the chains listed here")
    p.add_argument("--test-ids-path", help="deepfri_ec: chains of the test part (the others are trained on)")
    p.add_argument("--reference", help="proteingym: DMS_substitutions.csv")
    p.add_argument("--dms-id", help="proteingym: the assay's DMS_id in the reference table")
    p.add_argument("--fold-scheme", choices=list(FOLD_SCHEMES), help="proteingym: cross-validation scheme")
    p.add_argument("--split", help="flip: split name inside splits.zip (e.g. three_vs_rest)")
    p.add_argument("--labels", choices=["location", "membrane"], default="location", help="deeploc: 10-class location or membrane-bound vs soluble")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type: regression (numeric labels), classification (one class per row) or multilabel (classes joined by ;)")
    p.add_argument("--sequence-column", default="sequence", help="CSV column with sequences")
    p.add_argument("--label-column", default="label", help="CSV column with labels")
    p.add_argument("--id-column", help="CSV column with unique ids (default: row numbers)")
    p.add_argument("--fold-column", help="CSV column with integer fold ids (default: seeded k-fold)")
    p.add_argument("--label-regex", help="FASTA: regular expression on the header whose group 'label' (or group 1) is the label")
    p.add_argument("--max-sequences", type=_positive_int, help="subsample to at most this many sequences (seeded)")
    p.add_argument("--min-class-size", type=int, default=0, help="classification: drop classes with fewer members (logged)")
    p.add_argument("--cv-folds", type=_at_least_two, default=5, help="folds when the file has none (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for subsampling and folds")
    p.add_argument(
        "--folds", choices=list(FOLD_METHODS),
        help="cross-validated tasks: random (seeded k-fold) or homology (whole MMseqs2 sequence clusters per fold; needs mmseqs); "
        "default: the format's (homology for deepfri_ec, random for the others)",
    )
    p.add_argument("--homology-identity", type=_fraction, help=f"--folds homology: MMseqs2's minimum sequence identity within a cluster (default {DEFAULT_HOMOLOGY_IDENTITY})")
    p.add_argument("--out", required=True, help="task table TSV to write")
    p.add_argument("--info-out", required=True, help="JSON to write: how the task is split, and its ProteinGym assay and scheme")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("embed", help="embed a task at every layer into an HDF5 store")
    _add_model_run_arguments(p, out="HDF5 store to write")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision (default float16)")
    p.add_argument("--shard", type=int, help="embed only this shard (0-based) of --shards; writes a shard store for gather-embeddings")
    p.add_argument("--shards", type=_positive_int, help="number of shards the task is cut into")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (progress is then logged every 10 s)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("gather-embeddings", help="stream a task's shard stores into the task's HDF5 store")
    p.add_argument("shards", nargs="+", help="every shard store of the task (from embed --shard K --shards N)")
    p.add_argument("--out", required=True, help="HDF5 store to write")
    p.set_defaults(func=cmd_gather)

    p = sub.add_parser("cost", help="analytic FLOPs (task lengths) and measured forward time (a sample, on --device) per depth")
    _add_model_run_arguments(p, out="cost JSON to write")
    p.add_argument("--sample-sequences", type=_positive_int, default=8, help="sequences in the timed batch (default 8)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats, each one forward per batch timestamped after every layer; the median per depth is kept (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for the sample")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("probe", help="fit linear probes at every layer and fold; write a long TSV")
    p.add_argument("--embeddings", required=True, help="HDF5 store from embed")
    p.add_argument("--task", required=True, help="task table TSV from prepare")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True)
    p.add_argument("--metric", required=True, help="metric the layer is selected by (spearman; accuracy, macro_f1 or mcc; fmax, micro_f1 or macro_f1)")
    p.add_argument("--model-id", required=True, help="the model's id (as its store records it) for the table")
    p.add_argument("--task-name", required=True, help="task name for the table")
    p.add_argument("--alphas", type=_floats, default=DEFAULT_RIDGE_ALPHAS, help="ridge regularisation grid, comma-separated")
    p.add_argument("--cs", type=_floats, default=DEFAULT_LOGISTIC_CS, help="logistic regression C grid, comma-separated")
    p.add_argument("--inner-folds", type=_at_least_two, default=3, help="inner CV folds for classification and for --inner-split modulo/contiguous (default 3)")
    p.add_argument(
        "--inner-split", choices=list(INNER_SPLITS), default="loo",
        help="how a regression probe's training part is split to choose alpha and score the layer: loo, exact leave-one-out over "
        "variants (default; for random folds); modulo or contiguous, --inner-folds folds of whole mutated positions by that "
        "ProteinGym scheme's rule (ids must be single-substitution mutants)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="probe TSV to write")
    p.add_argument("--predictions", required=True, help="gzipped TSV of every test prediction to write")
    p.add_argument("--threads", type=_positive_int, default=1, help="layers probed at once, one process and one BLAS thread each (default 1)")
    p.add_argument(
        "--baseline-features", choices=["onehot", "composition"],
        help="also fit the chance predictor and a probe on these features (onehot: the variant's one-hot, for variant sets; "
        "composition: amino-acid composition and length) through the same folds; needs --baselines-out and --baseline-predictions",
    )
    p.add_argument("--baselines-out", help="baseline TSV to write (as the probe TSV, with a baseline column for the layer)")
    p.add_argument("--baseline-predictions", help="gzipped TSV of every baseline test prediction to write")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("select", help="choose the layer from inner (training-only) scores; write JSON")
    p.add_argument("--probes", required=True, help="probe TSV from probe")
    p.add_argument("--predictions", required=True, help="predictions TSV from probe (for the gain's interval)")
    p.add_argument("--cost", required=True, help="cost JSON from cost (time per depth; the embedding's layer-norm convention and truncation count)")
    p.add_argument("--task-info", required=True, help="task info JSON from prepare (how the task is split)")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type")
    p.add_argument("--metric", required=True, help="metric to select by")
    p.add_argument("--tolerance", type=float, default=0.0, help="prefer the shallowest layer within this much of the best inner score")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples for the gain's interval (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", required=True, help="selection JSON to write")
    p.add_argument("--baselines", help="baseline TSV from probe --baselines-out (scores the baselines and the final layer's gain over each)")
    p.add_argument("--baseline-predictions", help="baseline predictions from probe --baseline-predictions (for those gains' intervals)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("summarize", help="gather selections into best_layers.tsv (or a cluster batch's best layers)")
    p.add_argument("selections", nargs="+", help="selection JSON files")
    p.add_argument("--out", required=True, help="best_layers TSV to write")
    p.add_argument("--across-out", help="per-model across-task TSV to write (default: none)")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples over tasks (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser(
        "summarize-proteingym",
        help="ProteinGym supervised merge CSV (final and selected layer): Spearman and MSE pooled over out-of-fold predictions, as merge_supervised.py",
    )
    p.add_argument("selections", nargs="+", help="selection JSON files of ProteinGym tasks")
    p.add_argument("--predictions", nargs="+", required=True, help="each selection's predictions file from probe (same order)")
    p.add_argument("--task-tables", nargs="+", required=True, help="each selection's task table from prepare (same order): its folds' training rows")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=cmd_summarize_proteingym)

    p = sub.add_parser("export", help="ship the deployed layer: the model's first k blocks, the probe refitted on the rows that are never test rows, a model card")
    p.add_argument("--model", required=True, help="model manifest JSON from fetch-model (the model the store was embedded with)")
    p.add_argument("--embeddings", required=True, help="HDF5 store from embed (the deployed layer's features and the embedding settings)")
    p.add_argument("--task", required=True, help="task table TSV from prepare (the labels the probe is refitted on)")
    p.add_argument("--selection", required=True, help="selection JSON from select (deployed layer, its hyperparameter, scores)")
    p.add_argument("--cost", required=True, help="cost JSON from cost (FLOPs and time per depth, for the card)")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type")
    p.add_argument("--out", required=True, help="export directory to write (replaced whole if it exists)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="run an export (truncated model and probe) on new sequences; one row per sequence")
    p.add_argument("--export", required=True, help="export directory from export")
    p.add_argument("--input", required=True, help="sequences: .csv with a 'sequence' column (and optionally 'id'), or .fasta")
    p.add_argument("--out", required=True, help="predictions CSV to write")
    _add_device_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("lens", help="logit lens, block skipping and exit layers on a seeded masked sample of a task, from the model's own head")
    _add_head_arguments(p)
    p.add_argument("--task", required=True, help="task table TSV from prepare (its sequences are sampled)")
    p.add_argument("--task-name", required=True, help="task name for the tables")
    p.add_argument("--sample", type=_positive_int, default=64, help="distinct sequences to sample (default 64)")
    p.add_argument("--mask-fraction", type=float, default=0.15, help="fraction of each sequence's residues masked (default 0.15, as ESM2 was trained)")
    p.add_argument("--max-tokens", type=_positive_int, default=4096, help="padded tokens per batch (default 4096)")
    p.add_argument("--no-skip", action="store_true", help="leave out the block-skipping runs (one extra forward per block)")
    p.add_argument("--out", required=True, help="lens TSV to write: model, task, lens, layer, metric, value")
    p.add_argument("--skip-out", required=True, help="skipping TSV to write: model, task, block, layer, metric, value")
    p.add_argument("--exit-out", required=True, help="exit-layer TSV to write: model, task, layer, n_positions, fraction, cumulative_fraction")
    p.add_argument("--info-out", required=True, help="JSON to write: sample, masking, summary numbers, provenance")
    p.set_defaults(func=cmd_lens)

    p = sub.add_parser("zero-shot", help="score a ProteinGym assay at every layer from the model's own head (masked and wild-type marginals, DoLa, SLED)")
    _add_head_arguments(p)
    p.add_argument("--assay", required=True, help="ProteinGym substitution assay CSV (mutant, DMS_score[, DMS_score_bin])")
    p.add_argument("--reference", required=True, help="ProteinGym's DMS_substitutions.csv")
    p.add_argument("--dms-id", required=True, help="the assay's DMS_id in the reference table")
    p.add_argument("--calibration-fraction", type=_fraction, default=0.2,
                   help="seeded fraction of variants that chooses DoLa's premature layer and SLED's weights, never scored by them (default 0.2; 0 skips both)")
    p.add_argument("--batch-size", type=_positive_int, help="masked copies of the wild type per forward (default 32 on a GPU, 1 on a CPU, where batching does not pay)")
    p.add_argument("--out-long", required=True, help="TSV to write: model, dms_id, layer, method, subset, metric, value")
    p.add_argument("--out-proteingym", required=True, help="CSV to write in ProteinGym's zero-shot per-assay layout (one column per layer and method)")
    p.add_argument("--info-out", required=True, help="JSON to write: what the model read, the calibration choices, provenance")
    p.set_defaults(func=cmd_zero_shot)

    p = sub.add_parser("summarize-depth", help="per model and task: the lens's agreeing layer, the best zero-shot layer and the deployed layer; the per-layer curves")
    p.add_argument("--lens", nargs="*", default=[], help="info JSON files of lens (its tables are read from beside them)")
    p.add_argument("--zero-shot", nargs="*", default=[], help="info JSON files of zero-shot (its long tables are read from beside them)")
    p.add_argument("--selections", nargs="+", required=True, help="selection JSON files of the tasks the lens and zero-shot files speak of")
    p.add_argument("--out", required=True, help="summary TSV to write (one row per model and task)")
    p.add_argument("--curves-out", required=True, help="TSV of per-layer curves to write (what plot-depth draws)")
    p.set_defaults(func=cmd_summarize_depth)

    p = sub.add_parser("plot-depth", help="figure of what every layer already knows, against relative depth, every model")
    p.add_argument("--curves", required=True, help="curves TSV from summarize-depth")
    p.add_argument("--summary", required=True, help="summary TSV from summarize-depth (the deployed layers)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_plot_depth)

    p = sub.add_parser("plot-study", help="the paper's figures across models (relative depth, heat maps, gain vs compute, final-layer wins) and its tables")
    p.add_argument("--summary", required=True, help="best_layers TSV from summarize")
    p.add_argument("--across", required=True, help="across_tasks TSV from summarize")
    p.add_argument("--probes", nargs="+", required=True, help="probe tables (TSV from probe) of every model and task in the summary")
    p.add_argument("--figures-dir", required=True, help="directory to write the figures to (PNG and PDF), replaced whole")
    p.add_argument("--tables-dir", required=True, help="directory to write the tables to (Markdown and LaTeX), replaced whole")
    p.set_defaults(func=cmd_plot_study)

    p = sub.add_parser("plot-depth-task", help="figure of one model and task: the probe curve beside the lens and zero-shot curves, against relative depth")
    p.add_argument("--probes", required=True, help="probe TSV")
    p.add_argument("--selection", required=True, help="selection JSON (the metric, the deployed layer, the number of layers)")
    p.add_argument("--lens", nargs="?", help="lens TSV of the task's sequences (from lens); none: no lens curves")
    p.add_argument("--zero-shot", nargs="?", help="long zero-shot TSV of the task's assay (from zero-shot); none: no zero-shot curves")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--svg-out", help="SVG to write as well")
    p.set_defaults(func=cmd_plot_depth_task)

    p = sub.add_parser("plot-depth-exit", help="figure of one model: per task the layer each depth diagnostic and the exit controller point to, beside its exit trade-offs")
    p.add_argument("--model", required=True, help="model id (as in the summaries)")
    p.add_argument("--summary", required=True, help="best_layers TSV from summarize (deployed layers, number of layers, ProteinGym assay and scheme)")
    p.add_argument("--depth", required=True, help="summary TSV from summarize-depth (lens agreement layer, zero-shot layer chosen on calibration)")
    p.add_argument("--exit-tables", nargs="*", default=[], help="the model's exit TSVs from exit")
    p.add_argument("--out", required=True, help="PNG to write (300 dpi, 7.2 in wide)")
    p.add_argument("--pdf-out", required=True, help="PDF to write")
    p.set_defaults(func=cmd_plot_depth_exit)

    p = sub.add_parser("exit", help="per-sequence early exit: calibrate each fold's controller on training rows (Learn-then-Test), report it on test rows")
    p.add_argument("--embeddings", required=True, help="HDF5 store from embed")
    p.add_argument("--task", required=True, help="task table from prepare")
    p.add_argument("--probes", required=True, help="probe TSV from probe (the hyperparameter chosen per layer and fold)")
    p.add_argument("--selection", required=True, help="selection JSON from select (each fold's deployed layer)")
    p.add_argument("--cost", required=True, help="cost JSON from cost (measured seconds per depth)")
    p.add_argument("--model-id", required=True, help="model id written in the table")
    p.add_argument("--task-name", required=True, help="task name written in the table")
    p.add_argument("--type", choices=list(TASK_TYPES), required=True, help="task type")
    p.add_argument("--metric", required=True, help="metric to report (the task's selection metric)")
    _add_controller_arguments(p, "the reference layer", "a row")
    p.add_argument("--fallback", choices=["full", "deployed"], default="full", help="where rows that never pass go, and what they are compared with")
    p.add_argument("--tolerance", type=float, default=0.1, help="regression: patience and disagreement tolerance, in training-target SDs (default 0.1)")
    p.add_argument("--inner-folds", type=_at_least_two, default=3, help="inner folds whose out-of-fold outputs calibrate (default 3)")
    p.add_argument("--seed", type=int, default=0, help="inner split seed")
    p.add_argument("--out", required=True, help="exit TSV to write")
    p.add_argument("--info-out", required=True, help="exit JSON to write (thresholds tested, p-values, exit histograms)")
    p.set_defaults(func=cmd_exit)

    p = sub.add_parser("exit-timing", help="measured wall clock of full depth, the deployed layer and each calibrated controller (rows dropped "
                       "as they exit) on one fold's test sequences, with the embedding's settings")
    _add_model_run_arguments(p, out="timing TSV to write: per gate full_depth, static_layer, adaptive and adaptive_one_deep")
    p.add_argument("--embeddings", required=True, help="HDF5 store from embed (the probes are refitted on the fold's training rows)")
    p.add_argument("--probes", required=True, help="probe TSV from probe (the hyperparameter chosen per layer and fold)")
    p.add_argument("--selection", required=True, help="selection JSON from select (the deployed layer, timed as the static layer)")
    p.add_argument("--exit-info", required=True, help="exit JSON from exit (the calibrated thresholds)")
    p.add_argument("--info-out", required=True, help="JSON to write: device, precision, batches, exit histograms")
    p.add_argument("--sample-sequences", type=_positive_int, default=64, help="test sequences timed, a seeded sample (default 64)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats after one warm-up; the median is kept (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for the sample")
    p.set_defaults(func=cmd_exit_timing)

    p = sub.add_parser("summarize-exit", help="gather exit tables into one summary (means over folds)")
    p.add_argument("tables", nargs="+", help="exit TSV files")
    p.add_argument("--timings", nargs="*", default=[], help="timing TSVs from exit-timing (measured seconds beside the estimated ones)")
    p.add_argument("--epsilon", type=float, required=True, help="the risk budget the tables were calibrated to (counts folds over it)")
    p.add_argument("--out", required=True, help="summary TSV to write")
    p.set_defaults(func=cmd_summarize_exit)

    p = sub.add_parser("plot-exit", help="figure of the metric against mean layers and time: static layers, calibrated controllers, Hart's point")
    p.add_argument("--table", required=True, help="exit TSV from exit")
    p.add_argument("--timing", nargs="?", help="timing TSV from exit-timing; none: the time panel shows estimated time only")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_plot_exit)

    p = sub.add_parser("lens-exit", help="early exit of the model's own head: the exit gates calibrated (Learn-then-Test) on the logit lens "
                       "of a masked sample, per position and per sequence, against the final layer")
    _add_head_arguments(p)
    p.add_argument("--task", required=True, help="task table TSV from prepare (its sequences are sampled)")
    p.add_argument("--task-name", required=True, help="task (or embedding set) name for the table")
    p.add_argument("--sample", type=_positive_int, default=256, help="distinct sequences to sample (default 256)")
    p.add_argument("--mask-fraction", type=float, default=0.15, help="fraction of each sequence's residues masked (default 0.15, as ESM2 was trained)")
    p.add_argument("--calibration-fraction", type=float, default=0.5,
                   help="seeded fraction of the sampled sequences that calibrates; the others are reported on (default 0.5)")
    p.add_argument("--max-tokens", type=_positive_int, default=4096, help="padded tokens per batch (default 4096)")
    _add_controller_arguments(p, "the final layer", "a position or sequence")
    p.add_argument("--out", required=True, help="TSV to write: every static layer and each calibrated controller on the test sequences")
    p.add_argument("--info-out", required=True, help="JSON to write: settings, sample, calibration split, thresholds tested, provenance")
    p.set_defaults(func=cmd_lens_exit)

    p = sub.add_parser("summarize-lens-exit", help="gather head-exit tables into one summary (the calibrated controllers)")
    p.add_argument("tables", nargs="+", help="TSV files from lens-exit")
    p.add_argument("--epsilon", type=float, required=True, help="the risk budget the tables were calibrated to (flags controllers over it)")
    p.add_argument("--out", required=True, help="summary TSV to write")
    p.set_defaults(func=cmd_summarize_lens_exit)

    p = sub.add_parser("plot", help="figure of the metric against layer for one model and task")
    p.add_argument("--probes", required=True, help="probe TSV")
    p.add_argument("--selection", required=True, help="selection JSON")
    p.add_argument("--cost", required=True, help="cost JSON from cost (measured time per depth, drawn as time saved)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("plot-summary", help="figure of gain (with intervals) against compute saved, all tasks")
    p.add_argument("--summary", required=True, help="best_layers TSV from summarize")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=cmd_plot_summary)

    p = sub.add_parser("estimate", help="before submitting: tokens each model will embed, and the GPU-hours they cost")
    p.add_argument("--configfile", required=True, help="the config to plan (as given to snakemake)")
    p.add_argument("--schema", default="workflow/schemas/config.schema.yaml", help="config schema (default: the repository's, from its root)")
    p.add_argument("--tokens-per-second", type=_rate, action="append", default=[], metavar="MODEL=N",
                   help="a model's embedding throughput on your GPUs (repeat per model); default: measured by a previous run's cost files")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("install-profile", help="install the SLURM profile where Snakemake finds it by name, with your site's account, partition and GPU type")
    p.add_argument("--account", required=True, help="SLURM account charged (sbatch -A)")
    p.add_argument("--partition", required=True, help="SLURM partition (sbatch -p)")
    gpu = p.add_mutually_exclusive_group(required=True)
    gpu.add_argument("--gpu-type", help="GPU type as the site names it in its GRES (sinfo -o '%%P %%G'), or 'any' for any GPU (gpu:1)")
    gpu.add_argument("--no-gpu", action="store_true", help="a cluster without GPUs: no job asks for one")
    p.add_argument("--squeue-status", action="store_true", help="read job states with squeue (a cluster without SLURM accounting, no sacct)")
    p.add_argument("--name", default="slurm", help="profile name (default slurm: `snakemake --profile slurm`)")
    p.add_argument("--template", default="profiles/slurm/config.yaml", help="the shipped profile (default profiles/slurm/config.yaml, from the repository root)")
    p.add_argument("--force", action="store_true", help="replace a profile of that name already installed")
    p.set_defaults(func=cmd_install_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.FileHandler(args.log, mode="w") if args.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
    except PlmexitError as exc:
        message = f"plmexit {args.command}: error: {exc}"
        if args.log:
            handler.stream.write(message + "\n")
        print(message, file=sys.stderr)
        return 1
    finally:
        root.removeHandler(handler)
        handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
