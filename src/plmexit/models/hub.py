"""Transformers models: fetch pinned hub snapshots, verify every file, load safetensors only, and
write tiny random models of every family in the format the real ones are published in.

Invariant: a transformers model is a directory whose every model file (config, tokenizer files,
weights: ``ALLOW_PATTERNS``) has its sha256 in the manifest, checked before anything reads it; weights are loaded only from ``*.safetensors`` (never a pickle);
hub snapshots are pinned to a 40-hex commit and downloaded only by ``resolve_transformers``
(the submitting node), never by ``load_transformers``. Each family (``plmexit.models.families``) says
how residues become tokens (one token per residue, between its special tokens) and what its final
norm is, so that layer ``k`` means the same for every family (``plmexit.embedding.generic``); this
module holds the code that loads and writes them, looked up by family name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from plmexit.atomic import write_text
from plmexit.download import sha256_file
from plmexit.errors import MissingExtraError, ModelError, one_line
from plmexit.models import families
from plmexit.models.esm2 import Esm2Block, Esm2Weights
from plmexit.models.esm2 import layer_norm as ln
from plmexit.models.esm2 import linear as lin
from plmexit.models.tokens import RESIDUES, TokenScheme

try:
    import transformers
except ModuleNotFoundError as exc:  # plmexit installed without the hub extra
    raise MissingExtraError.of("hub", "transformers models", exc) from None

log = logging.getLogger(__name__)

FORMAT = families.TRANSFORMERS
# What a hub snapshot needs: config, tokenizer files, safetensors weights. Never *.bin / *.pt / *.ckpt.
ALLOW_PATTERNS = [
    "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "spiece.model",
]
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Rostlab's model cards (ProtBert, ProtAlbert, ProtT5) map the rare residues to X before tokenising.
RARE_RESIDUES = "UZOB"


def transformers_version() -> str:
    return transformers.__version__


def token_scheme(tokenizer, rare_to_x: bool) -> TokenScheme:
    """The model's own tokenizer as a ``TokenScheme``: each residue letter (rare ones as X where
    the model card says so) must be exactly one token; prefix and suffix are what the tokenizer
    puts around a one-residue input."""
    ids = {}
    for residue in RESIDUES:
        letter = "X" if rare_to_x and residue in RARE_RESIDUES else residue
        found = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise ModelError(f"tokenizer {tokenizer.name_or_path}: residue {letter!r} is {len(found)} tokens, expected one; not a per-residue protein tokenizer")
        ids[residue] = found[0]
    probe = tokenizer("A", add_special_tokens=True)["input_ids"]
    at = probe.index(ids["A"])
    return TokenScheme.from_mapping(ids, tokenizer.unk_token_id, probe[:at], probe[at + 1 :], tokenizer.pad_token_id)


@dataclass
class HubModel:
    """A loaded transformers encoder, its tokenizer, and what identifies it."""

    module: torch.nn.Module
    tokenizer: object
    family: str
    name: str
    sha256: str

    @property
    def config(self):
        return self.module.config

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        return self.config.hidden_size if hasattr(self.config, "hidden_size") else self.config.d_model

    @functools.cached_property
    def tokens(self) -> TokenScheme:
        return token_scheme(self.tokenizer, families.get(self.family).rare_to_x)

    @property
    def blocks(self) -> list:
        """The block modules in the order the forward runs them (ALBERT's shared ones once per use)."""
        return families.run_order_blocks(self.module, self.family)

    @property
    def final_norm(self):
        path = families.get(self.family).final_norm
        return None if path is None else families.attribute(self.module, path)

    @property
    def block_matmul_weights(self) -> int:
        """Entries of one block's weight matrices (every ``nn.Linear`` in it), for analytic FLOPs."""
        return sum(m.weight.numel() for m in self.blocks[0].modules() if isinstance(m, torch.nn.Linear))

    def esm2_weights(self) -> Esm2Weights | None:
        """The fast encoder's layout when this is an ESM2 (rotary, no embedding norm), else None."""
        c = self.config
        if self.family != "esm" or c.position_embedding_type != "rotary" or c.emb_layer_norm_before or c.is_decoder:
            return None
        m = self.module

        blocks = [
            Esm2Block(
                ln1=ln(layer.attention.LayerNorm), q=lin(layer.attention.self.query), k=lin(layer.attention.self.key),
                v=lin(layer.attention.self.value), out=lin(layer.attention.output.dense), ln2=ln(layer.LayerNorm),
                fc1=lin(layer.intermediate.dense), fc2=lin(layer.output.dense),
            )
            for layer in m.encoder.layer
        ]
        return Esm2Weights(
            embed_tokens=m.embeddings.word_embeddings.weight, embed_scale=1.0, blocks=blocks, ln_after=ln(m.encoder.emb_layer_norm_after),
            inv_freq=m.rotary_embeddings.inv_freq, heads=c.num_attention_heads, token_dropout=bool(c.token_dropout),
            mask_idx=c.mask_token_id, padding_idx=c.pad_token_id,
        )

    def describe(self) -> dict:
        return {
            "model_family": self.family, "model_format": FORMAT, "transformers_version": transformers_version(),
            "final_norm": families.get(self.family).final_norm_description,
        }


# --- fetch and verify ---------------------------------------------------------------------------


def resolve_transformers(
    *,
    hub: str | None = None,
    revision: str | None = None,
    path: str | Path | None = None,
    family: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Make a transformers model available locally and describe it as a manifest dict.

    ``hub`` is a hub repository id pinned to ``revision`` (a 40-hex commit: a branch name can move),
    downloaded with ``huggingface_hub.snapshot_download`` (config, tokenizer and safetensors files
    only) into ``cache_dir``; ``path`` is a local directory. Every file is hashed into the manifest.
    """
    if (hub is None) == (path is None):
        raise ModelError("a transformers model needs exactly one of `hub` (a hub repository id) or `path` (a local directory)")
    if hub is not None:
        if revision is None or not _COMMIT.fullmatch(revision):
            raise ModelError(
                f"hub model {hub}: revision {revision!r} is not a 40-hex commit; pin the model to the commit shown on the hub "
                "(a branch such as 'main' can move and would make runs unreproducible)"
            )
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(repo_id=hub, revision=revision, allow_patterns=ALLOW_PATTERNS, cache_dir=cache_dir))
        except Exception as exc:  # noqa: BLE001 - network, auth and missing-revision errors all mean "could not fetch"
            raise ModelError(f"hub model {hub} at {revision}: could not download ({type(exc).__name__}: {one_line(exc)})") from None
        name, source = hub.split("/")[-1], "hub"
    else:
        if revision is not None:
            raise ModelError("a `revision` only applies to a `hub` model; drop it for a local directory")
        directory = Path(path)
        if not directory.is_dir():
            raise ModelError(f"model directory {directory} does not exist; fix the model's path in the config")
        name, source = directory.name, "directory"
    _check_safetensors(directory)
    model_type = _read_config(directory).get("model_type")
    family = family or families.INFERRED_FAMILY.get(model_type)
    if family not in families.HUB_FAMILIES:
        raise ModelError(f"{directory}: model_type {model_type!r} with family {family!r} is not supported; use a family of {', '.join(families.HUB_FAMILIES)}")
    if model_type not in families.get(family).model_types:
        raise ModelError(f"{directory}: model_type {model_type!r} is not a {family} model (expected {', '.join(families.get(family).model_types)}); fix the family")
    files = hash_files(directory)
    return {
        "name": name, "source": source, "format": FORMAT, "family": family, "repo_id": hub, "revision": revision,
        "path": str(directory.resolve()), "files": files, "sha256": combined_sha256(files),
    }


def _read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: no readable config.json ({one_line(exc)}); not a transformers model directory") from None


def _check_safetensors(directory: Path) -> None:
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in directory.glob(pattern))
    if pickles:
        raise ModelError(
            f"{directory}: holds only pickled weights ({', '.join(pickles)}), which plmexit refuses to load because unpickling can run "
            "arbitrary code; use a revision with model.safetensors (the hub's safetensors conversion commit) or convert the weights with safetensors"
        )
    raise ModelError(f"{directory}: no *.safetensors weight file; not a transformers model directory")


def model_files(directory: Path) -> list[Path]:
    """The files of ``directory`` that loading reads (``ALLOW_PATTERNS``: config, tokenizer,
    safetensors); others (a README, pickled weights a hub snapshot may also hold) are never read."""
    return sorted(p for p in directory.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in ALLOW_PATTERNS))


def hash_files(directory: Path) -> dict[str, str]:
    """``{file name: sha256}`` of ``model_files(directory)`` (symlinks followed, as in the hub cache)."""
    return {p.name: sha256_file(p) for p in model_files(directory)}


def combined_sha256(files: dict[str, str]) -> str:
    """One hash for a model directory: sha256 of its sorted ``path  sha256`` lines."""
    return hashlib.sha256("".join(f"{k}  {v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def verify_files(directory: Path, files: dict[str, str]) -> None:
    """Every recorded file is there with its recorded sha256, and no other file loading would read
    is; else a ``ModelError``."""
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; rerun `plmexit fetch-model`")
    found = hash_files(directory)
    for name, expected in sorted(files.items()):
        if name not in found:
            raise ModelError(f"{directory / name}: missing; rerun `plmexit fetch-model`")
        if found[name] != expected:
            raise ModelError(f"{directory / name}: sha256 is {found[name]}, expected {expected}; the file is corrupt or not the fetched model")
    extra = sorted(set(found) - set(files))
    if extra:
        raise ModelError(f"{directory}: holds model files not in its manifest ({', '.join(extra)}); remove them or rerun `plmexit fetch-model`")


@contextlib.contextmanager
def quiet_transformers():
    """transformers' own messages while loading (its weight-loading report goes to stderr through
    its logger) held back to errors; plmexit checks the loading info itself and logs what matters."""
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


def load_transformers(manifest: dict, device: str = "cpu") -> HubModel:
    """Verify every file of a manifest's directory, then load its encoder (safetensors only, SDPA
    attention where supported, fp32, eval mode) and tokenizer from disk, never from the network."""
    directory = Path(manifest["path"])
    verify_files(directory, manifest["files"])
    # The library never prints: transformers' weight-loading progress bars would go to stderr.
    transformers.utils.logging.disable_progress_bar()
    _check_safetensors(directory)
    family = families.get(manifest["family"])
    cls = getattr(transformers, family.encoder_class)
    kwargs = {"add_pooling_layer": False} if family.pooler else {}
    try:
        with quiet_transformers():
            try:
                module, info = cls.from_pretrained(
                    directory, use_safetensors=True, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa", output_loading_info=True, **kwargs
                )
            except ValueError as exc:
                if "sdpa" not in str(exc).lower():
                    raise
                module, info = cls.from_pretrained(directory, use_safetensors=True, local_files_only=True, dtype=torch.float32, output_loading_info=True, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{directory}: not loadable as a {family.encoder_class} ({one_line(exc)})") from None
    if info.get("missing_keys"):
        raise ModelError(f"{directory}: weights missing for {', '.join(sorted(info['missing_keys']))}; the files do not fit a {family.encoder_class}")
    if info.get("unexpected_keys"):
        # A ForMaskedLM checkpoint read as its encoder: the head's weights are not part of it.
        unused = sorted(info["unexpected_keys"])
        log.info("%s: %d checkpoint tensors are not part of %s and are not used (%s%s)", directory, len(unused), family.encoder_class, ", ".join(unused[:4]), ", ..." if len(unused) > 4 else "")
    # transformers maps safetensors files into memory; copying the weights out means a file changed
    # on disk after verification cannot change the weights of a running job.
    for parameter in module.parameters():
        parameter.data = parameter.data.clone()
    module.eval().to(device)
    loaded = HubModel(module=module, tokenizer=tokenizer, family=family.name, name=manifest["name"], sha256=manifest["sha256"])
    log.info("loaded %s (%s, %d layers, width %d, sha256 %s) on %s", loaded.name, family.name, loaded.num_layers, loaded.embed_dim, loaded.sha256[:12], device)
    return loaded


def load_masked_lm(manifest: dict, device: str = "cpu"):
    """``(model, tokenizer)``: a manifest's model with its masked-LM head (``families.MASKED_LM_FAMILIES``),
    every file verified first, safetensors only, from disk only; a ``ModelError`` when the family
    has no head plmexit reads or the files hold no head."""
    directory = Path(manifest["path"])
    if manifest["family"] not in families.MASKED_LM_FAMILIES:
        raise ModelError(
            f"{directory}: a {manifest['family']} model; the depth diagnostics read the masked-LM head of {', '.join(families.MASKED_LM_FAMILIES)} "
            "transformers models (and fair-esm ESM2)"
        )
    verify_files(directory, manifest["files"])
    transformers.utils.logging.disable_progress_bar()
    cls = getattr(transformers, families.get(manifest["family"]).masked_lm.cls)
    try:
        module, info = cls.from_pretrained(directory, use_safetensors=True, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{directory}: not loadable as a {cls.__name__} ({one_line(exc)})") from None
    if info.get("missing_keys"):
        raise ModelError(f"{directory}: no masked-LM head in its weights (missing {', '.join(sorted(info['missing_keys'])[:3])}); the depth diagnostics need one")
    for parameter in module.parameters():  # copied out of the memory map, as load_transformers does
        parameter.data = parameter.data.clone()
    return module.eval().to(device), tokenizer


# --- tiny random models in the published formats ------------------------------------------------

# fair-esm's Alphabet.from_architecture("ESM-1b") order, as the facebook/esm2_* vocab.txt files list it.
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]
# Rostlab/prot_bert's vocab.txt.
PROTBERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"LAGVESIKRDTPNQFYMHCWXUBZO"]
# Rostlab/prot_t5_xl_uniref50's spiece.model: pad, </s>, unk, then one "▁X" piece per residue letter; 100 extra ids follow.
PROTT5_PIECES = "ALGVSREDTIPKFQNYMHWCXBOUZ"


def make_test_model(family: str, layers: int, dim: int, heads: int, seed: int, out_dir: str | Path) -> Path:
    """Write a randomly initialised model of ``family`` as the real ones are published (config.json,
    model.safetensors, tokenizer files); returns its directory. Never a real model."""
    if family not in families.HUB_TEST_MODEL_FAMILIES:
        raise ModelError(f"test model: family {family!r} has no transformers test model; use one of {', '.join(families.HUB_TEST_MODEL_FAMILIES)}")
    if layers < 1 or dim < 1 or heads < 1 or dim % heads:
        raise ModelError(f"test model: need layers >= 1 and dim divisible by heads (got layers={layers}, dim={dim}, heads={heads})")
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    out = Path(out_dir) / families.test_model_name(family, layers, dim, heads, seed)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = _WRITERS[family](layers, dim, heads, tmp)
    model.config.plmexit_random_init_seed = seed
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("wrote random %s test model %s", family, out)
    return out


def _write_esm_tokenizer(directory: Path) -> None:
    write_text(directory / "vocab.txt", "\n".join(ESM_VOCAB) + "\n")
    write_text(directory / "tokenizer_config.json", json.dumps({"tokenizer_class": "EsmTokenizer", "model_max_length": 1026}, indent=2) + "\n")
    write_text(directory / "special_tokens_map.json", json.dumps(
        {"cls_token": "<cls>", "eos_token": "<eos>", "mask_token": "<mask>", "pad_token": "<pad>", "unk_token": "<unk>"}, indent=2) + "\n")


def _esm_config(layers: int, dim: int, heads: int) -> transformers.EsmConfig:
    # As the facebook/esm2_* configs: rotary positions, token dropout, no embedding norm, eps 1e-5.
    return transformers.EsmConfig(
        vocab_size=len(ESM_VOCAB), hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * dim,
        position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False, layer_norm_eps=1e-5,
        pad_token_id=1, mask_token_id=32, max_position_embeddings=1026, hidden_act="gelu", architectures=["EsmForMaskedLM"],
    )


def _write_esm(layers: int, dim: int, heads: int, directory: Path):
    _write_esm_tokenizer(directory)
    return transformers.EsmForMaskedLM(_esm_config(layers, dim, heads)).eval()


def _write_bert_tokenizer(directory: Path) -> None:
    write_text(directory / "vocab.txt", "\n".join(PROTBERT_VOCAB) + "\n")
    write_text(directory / "tokenizer_config.json", json.dumps({"do_lower_case": False, "tokenizer_class": "BertTokenizer"}, indent=2) + "\n")
    write_text(directory / "special_tokens_map.json", json.dumps(
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}, indent=2) + "\n")


def _write_bert(layers: int, dim: int, heads: int, directory: Path):
    _write_bert_tokenizer(directory)
    config = transformers.BertConfig(
        vocab_size=len(PROTBERT_VOCAB), hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * dim,
        max_position_embeddings=40000, pad_token_id=0, architectures=["BertForMaskedLM"],
    )
    return transformers.BertForMaskedLM(config).eval()


def _write_albert(layers: int, dim: int, heads: int, directory: Path):
    # ProtBert's vocab.txt and BertTokenizer (ProtAlbert's own tokenizer files were not available to check offline).
    _write_bert_tokenizer(directory)
    config = transformers.AlbertConfig(
        vocab_size=len(PROTBERT_VOCAB), embedding_size=max(dim // 2, 1), hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * dim, num_hidden_groups=1, inner_group_num=1, pad_token_id=0, hidden_act="gelu",
        max_position_embeddings=40000, architectures=["AlbertForMaskedLM"],
    )
    return transformers.AlbertForMaskedLM(config).eval()


def _write_t5(layers: int, dim: int, heads: int, directory: Path):
    (directory / "spiece.model").write_bytes(prott5_sentencepiece_model())
    write_text(directory / "tokenizer_config.json", json.dumps(
        {"do_lower_case": False, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "extra_ids": 100, "tokenizer_class": "T5Tokenizer"},
        indent=2) + "\n")
    write_text(directory / "special_tokens_map.json", json.dumps({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2) + "\n")
    config = transformers.T5Config(
        vocab_size=128, d_model=dim, d_kv=dim // heads, d_ff=4 * dim, num_layers=layers, num_heads=heads, feed_forward_proj="relu",
        is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, architectures=["T5EncoderModel"],
    )
    return transformers.T5EncoderModel(config).eval()


def _write_esmc(layers: int, dim: int, heads: int, directory: Path):
    transformers.EsmcTokenizer().save_pretrained(directory)
    config = transformers.EsmcConfig(
        hidden_size=dim, intermediate_size=3 * dim, num_hidden_layers=layers, num_attention_heads=heads, architectures=["EsmcForMaskedLM"],
    )
    return transformers.EsmcForMaskedLM(config).eval()


# One writer per family of families.HUB_TEST_MODEL_FAMILIES (test_families checks they agree).
_WRITERS = {"esm": _write_esm, "bert": _write_bert, "albert": _write_albert, "t5": _write_t5, "esmc": _write_esmc}


def prott5_sentencepiece_model() -> bytes:
    """A sentencepiece ``ModelProto`` (unigram) with ProtT5's vocabulary, written as protobuf wire
    bytes: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then ``▁A ▁L ▁G ...`` (one piece per residue letter)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, wire: int, value) -> bytes:
        key = varint(number << 3 | wire)
        if wire == 0:
            return key + varint(value)
        if wire == 5:
            import struct

            return key + struct.pack("<f", value)
        return key + varint(len(value)) + value

    NORMAL, UNKNOWN, CONTROL = 1, 2, 3
    pieces = [("<pad>", 0.0, CONTROL), ("</s>", 0.0, CONTROL), ("<unk>", 0.0, UNKNOWN)]
    pieces += [("\u2581" + letter, -float(i + 1), NORMAL) for i, letter in enumerate(PROTT5_PIECES)]
    body = b"".join(field(1, 2, field(1, 2, p.encode()) + field(2, 5, s) + field(3, 0, t)) for p, s, t in pieces)
    # TrainerSpec: model_type UNIGRAM (3), unk_id 2 (40), bos_id -1 (41), eos_id 1 (42), pad_id 0 (43).
    trainer = field(3, 0, 1) + field(40, 0, 2) + field(41, 0, (1 << 64) - 1) + field(42, 0, 1) + field(43, 0, 0)
    # NormalizerSpec: identity rules, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces.
    normalizer = field(1, 2, b"identity") + field(3, 0, 1) + field(4, 0, 1) + field(5, 0, 1)
    return body + field(2, 2, trainer) + field(3, 2, normalizer)


def convert_fair_esm(model, alphabet, out_dir: str | Path) -> Path:
    """Write a fair-esm ESM2 (module and alphabet) as a transformers ``EsmForMaskedLM`` directory
    (config.json, model.safetensors, vocab.txt), the layout of the facebook/esm2_* hub repositories."""
    if [alphabet.get_tok(i) for i in range(len(ESM_VOCAB))] != ESM_VOCAB:
        raise ModelError("fair-esm model: alphabet is not ESM2's; only ESM2 models convert")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _esm_config(model.num_layers, model.embed_dim, model.attention_heads)
    config.token_dropout = bool(model.token_dropout)
    config.layer_norm_eps = model.emb_layer_norm_after.eps
    hf = transformers.EsmForMaskedLM(config).eval()
    src = model.state_dict()
    state = {"esm.embeddings.word_embeddings.weight": src["embed_tokens.weight"]}
    parts = {
        "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key", "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense", "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense",
        "fc2": "output.dense", "final_layer_norm": "LayerNorm",
    }
    for i in range(model.num_layers):
        for theirs, ours in parts.items():
            for p in ("weight", "bias"):
                state[f"esm.encoder.layer.{i}.{ours}.{p}"] = src[f"layers.{i}.{theirs}.{p}"]
    for p in ("weight", "bias"):
        state[f"esm.encoder.emb_layer_norm_after.{p}"] = src[f"emb_layer_norm_after.{p}"]
        state[f"lm_head.dense.{p}"] = src[f"lm_head.dense.{p}"]
        state[f"lm_head.layer_norm.{p}"] = src[f"lm_head.layer_norm.{p}"]
    state["lm_head.decoder.weight"] = src["lm_head.weight"]
    state["lm_head.bias"] = src["lm_head.bias"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "inv_freq" not in k and "position_ids" not in k and "contact_head" not in k]
    if missing or unexpected:
        raise ModelError(f"fair-esm to transformers: missing {missing}, unexpected {unexpected}")
    hf.save_pretrained(out, safe_serialization=True)
    _write_esm_tokenizer(out)
    return out


def convert_fair_esm_checkpoint(checkpoint: str | Path, out_dir: str | Path, sha256: str | None = None) -> Path:
    """Verify and load a fair-esm ESM2 checkpoint (``fair_esm.load_model``) and write it as a
    transformers directory (``convert_fair_esm``)."""
    from plmexit.models import fair_esm

    loaded = fair_esm.load_model(checkpoint, sha256)
    return convert_fair_esm(loaded.model, loaded.alphabet, out_dir)
