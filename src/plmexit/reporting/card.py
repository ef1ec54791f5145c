"""The model card (``README.md`` of an export) as text, from the export's ``card.json`` dict.

Invariant: every number and statement in the card comes from the dict (which ``plmexit export``
writes beside it); nothing here reads files or computes scores.
"""

from __future__ import annotations

from plmexit.probing.choice import VERDICTS


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _homology_lines(clustering: dict | None) -> list[str]:
    """Under homology folds, what the scores are of: sequences with no MMseqs2 homolog trained on."""
    if not clustering:
        return []
    return [
        f"- Folds: whole MMseqs2 clusters ({clustering['min_seq_id']:g} identity, {clustering['coverage']:g} coverage of both "
        f"sequences; {clustering['n_clusters']} clusters, the largest {clustering['largest_cluster']}): no test sequence has a homolog "
        "at that identity in its fold's training rows, and the interval resamples whole clusters.",
    ]


def render_card(card: dict) -> str:
    source, model, task, feature, scores, compute, embedding, probe = (
        card[k] for k in ("source_model", "model", "task", "feature", "scores", "compute", "embedding", "probe")
    )
    layer, final = card["deployed_layer"], card["final_layer"]
    interval = f"[{_number(scores['gain_ci_low'])}, {_number(scores['gain_ci_high'])}]"
    level = _percent(scores["interval_level"]) if scores["interval_level"] is not None else "n/a"
    if embedding["long_sequences"] == "window":
        long_sequences = f"sliding windows of {embedding['window']} residues overlapping by {embedding['overlap']}"
    else:
        long_sequences = f"truncated to the first {embedding['truncate']} residues"
    transformers = model.get("format") == "transformers"
    snippet = _transformers_snippet(model, layer) if transformers else _fair_esm_snippet(model["file"], layer, feature)
    where = f"`{model['directory']}/`, a transformers {model['family']} directory" if transformers else f"`{model['file']}`"
    lines = [
        f"# {source['name']}, first {_blocks(model['blocks'])}, with a {task['type']} probe for {task['name']}",
        "",
        f"Written by plmexit {card['plmexit_version']} on {card['created']}. Source model `{source['name']}` "
        f"({source.get('family', 'fair-esm')}, sha256 `{source['sha256']}`, {final} layers).",
        "",
        "## What it is",
        "",
        f"- Deployed layer: **{layer}** of {final}, chosen on rows that are never test rows (the deploy fold: a train/test split's training file, every row of a cross-validated task); the model keeps its first "
        f"{_blocks(model['blocks'])} ({where}, sha256 `{model['sha256']}`).",
        f"- Feature the probe reads: {feature['representation']}; layer-norm convention `{feature['layer_norm']}`.",
        f"  Compute it as {feature['how_to_compute']}.",
        f"- Sequences: {long_sequences}; pooling: {feature['pooling']}; precision {embedding['precision']}.",
        f"- Probe (`{probe['file']}`): {task['type']}, link `{probe['link']}`, hyperparameter {_number(probe['hyperparameter'])}, "
        f"{probe['fit']} ({task['n_training_rows']} rows).",
        "",
        "## How well, and what it saves",
        "",
        f"- Nested score ({task['metric']}): {_number(scores['nested_score'])}; final layer: {_number(scores['final_score'])}; "
        f"gain {_number(scores['gain'])}, {level} interval {interval}.",
        f"- The nested score is the {scores['nested_score_covers']}. The interval is of {scores['interval_of']}: {scores['interval_covers']}.",
        *_homology_lines(scores.get("clustering")),
        f"- Verdict: {VERDICTS.get(scores['verdict'], 'n/a')}; layers chosen per fold: {scores['fold_layers']}.",
        *_baseline_lines(scores),
        f"- Compute saved against the full model: {_percent(compute['flops_saved'])} of FLOPs, {_percent(compute['time_saved'])} of "
        f"measured forward time (on {compute['measured_on'].get('device_name') or compute['measured_on'].get('device')})"
        + (": not a saving, since no layer beats chance." if scores.get("verdict") == "not_above_chance" else "."),
        "",
        "## How to use it",
        "",
        "With plmexit (embeds exactly as the probe was trained, applies the probe, one row per sequence):",
        "",
        "```",
        "plmexit predict --export THIS_DIRECTORY --input sequences.fasta --out predictions.csv",
        "```",
        "",
        ("With transformers directly" if transformers else "With fair-esm directly") + " (the probe's formula is in `probe.json`, key `formula`):",
        "",
        "```python",
        *snippet,
        "```",
        "",
        "Contact prediction of the truncated model is not meaningful (its contact regression is the source's, cut to the kept blocks).",
        "",
    ]
    return "\n".join(lines)


def _baseline_lines(scores: dict) -> list[str]:
    """What a layer had to beat (README, "Baselines"): nothing where the probe step fitted no baselines."""
    if scores.get("chance_score") is None:
        return []
    gain = lambda name: f"{_number(scores[name])} [{_number(scores[name + '_ci_low'])}, {_number(scores[name + '_ci_high'])}]"  # noqa: E731
    return [
        f"- Baselines (same folds, inner selection and metric): chance {_number(scores['chance_score'])}, "
        f"{scores['baseline_features']} probe {_number(scores['baseline_score'])}; the final layer's gain over chance {gain('final_gain_over_chance')}, "
        f"over the {scores['baseline_features']} probe {gain('final_gain_over_baseline')}; the nested selection's over chance "
        f"{gain('nested_gain_over_chance')} (paired bootstrap intervals, as the gain's).",
    ]


def _blocks(n: int) -> str:
    return f"{n} block" + ("" if n == 1 else "s")


def _transformers_snippet(model: dict, layer: int) -> list[str]:
    return [
        "import json, numpy as np, torch, transformers",
        f'model = transformers.{model["model_class"]}.from_pretrained("{model["directory"]}", use_safetensors=True).eval()',
        f'tokenizer = transformers.AutoTokenizer.from_pretrained("{model["directory"]}")',
        f"# Tokenise as the family's model card says ({model['tokenisation']}) and keep residue positions only;",
        "# the feature is the one described above (hidden state, final norm as stated), mean over residues.",
        "with torch.no_grad():",
        '    out = model(**tokenizer(TEXT, return_tensors="pt"), output_hidden_states=True)',
        f"x = out.hidden_states[{layer}][0, RESIDUE_POSITIONS].mean(0).numpy()",
        'p = json.load(open("probe.json"))',
        'scores = ((x - np.array(p["mean"])) / np.array(p["scale"])) @ np.array(p["weights"]) + np.array(p["intercept"])',
    ]


def _fair_esm_snippet(file: str, layer: int, feature: dict) -> list[str]:
    unnorm = feature["layer_norm"] == "raw" and not feature["is_exported_models_last_output"] and layer > 0
    lines = [
        "import argparse, json, esm, numpy as np, torch",
        "# torch >= 2.6 loads weights only: allow the one non-tensor object fair-esm checkpoints hold",
        "with torch.serialization.safe_globals([argparse.Namespace]):",
        f'    model, alphabet = esm.pretrained.load_model_and_alphabet_local("{file}")',
        "model.eval()",
    ]
    if unnorm:
        lines.append("model.emb_layer_norm_after = torch.nn.Identity()  # the probe reads the raw block output")
    lines += [
        'tokens = alphabet.get_batch_converter()([("p1", "MKTAYIAKQR")])[2]',
        "with torch.no_grad():",
        f"    h = model(tokens, repr_layers=[{layer}])[\"representations\"][{layer}][0, 1:-1]  # residues only",
    ]
    if layer == 0 and feature["layer_norm"] == "final":
        lines.append("    h = model.emb_layer_norm_after(h)")
    lines += [
        "x = h.mean(0).numpy()",
        'p = json.load(open("probe.json"))',
        'scores = ((x - np.array(p["mean"])) / np.array(p["scale"])) @ np.array(p["weights"]) + np.array(p["intercept"])',
    ]
    return lines
