"""Stage: models (make-test-model, convert-model, fetch-model)."""

from __future__ import annotations

import argparse

from plmexit.cli.common import dispatch, positive_int
from plmexit.models import families


def register(subparsers) -> None:
    p = subparsers.add_parser("make-test-model", help="write a randomly initialised model in its family's published format (for tests and offline demos)")
    p.add_argument("--family", choices=families.TEST_MODEL_FAMILIES, default=families.DEFAULT_TEST_MODEL_FAMILY,
                   help="fair-esm (an ESM2 checkpoint file, the default) or a transformers family (a model directory)")
    p.add_argument("--layers", type=positive_int, required=True, help="number of transformer layers")
    p.add_argument("--dim", type=positive_int, required=True, help="embedding width (divisible by --heads)")
    p.add_argument("--heads", type=positive_int, required=True, help="attention heads")
    p.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    p.add_argument("--out", required=True, help="directory to write esm2_t{L}_{D}d_{H}h_seed{S}_random.pt (fair-esm) or {family}_t{L}_{D}d_{H}h_seed{S}_random/ into")

    p = subparsers.add_parser("convert-model", help="write a fair-esm ESM2 checkpoint as a transformers EsmForMaskedLM directory (safetensors)")
    p.add_argument("--checkpoint", required=True, help="fair-esm checkpoint file whose name starts with esm2")
    p.add_argument("--sha256", help="expected sha256 of the checkpoint (verified before it is read)")
    p.add_argument("--out", required=True, help="directory to write config.json, model.safetensors and vocab.txt into")

    p = subparsers.add_parser("fetch-model", help="download a fair-esm model or a pinned hub snapshot, or hash a local checkpoint or directory; write a model manifest")
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


def run_make_test_model(args: argparse.Namespace) -> None:
    from plmexit.models.manifest import make_test_model

    print(make_test_model(family=args.family, layers=args.layers, dim=args.dim, heads=args.heads, seed=args.seed, out_dir=args.out))


def run_convert_model(args: argparse.Namespace) -> None:
    from plmexit.models.hub import convert_fair_esm_checkpoint

    print(convert_fair_esm_checkpoint(args.checkpoint, args.out, args.sha256))


def run_fetch_model(args: argparse.Namespace) -> None:
    from plmexit.pipeline.model_steps import fetch_model

    fetch_model(
        args.out, args.id, name=args.name, checkpoint=args.checkpoint, sha256=args.sha256, url=args.url, cache_dir=args.cache_dir,
        hub=args.hub, revision=args.revision, path=args.path, family=args.family,
    )


COMMANDS = {"make-test-model": run_make_test_model, "convert-model": run_convert_model, "fetch-model": run_fetch_model}


def run(args: argparse.Namespace) -> None:
    dispatch(COMMANDS, args)
