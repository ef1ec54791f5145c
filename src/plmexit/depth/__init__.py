"""What every layer already predicts, from the model's own masked-LM head: logit lens, block skipping, exit layers, zero-shot scoring."""
