"""Depth diagnostics from the model's own head (logit lens, layer skipping, zero-shot scoring, early exit); empty until their issues land."""
