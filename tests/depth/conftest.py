"""One torch thread for the depth tests (their forwards are tiny, and on a shared 2-core machine a
second thread makes each one tens of times slower, not faster); the tiny transformers masked LMs."""

import pytest
import torch

from plmexit.models import families


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Every transformers family with a masked-LM head, as make-test-model writes it and load_masked_lm loads it.
HEAD_FAMILIES = families.MASKED_LM_FAMILIES


@pytest.fixture(scope="session")
def hub_heads(tiny_hub_models):
    """family -> (model, tokenizer) loaded by ``hub.load_masked_lm`` (verified, safetensors only)."""
    from plmexit.models import hub
    from plmexit.models import manifest as model_manifest

    return {family: hub.load_masked_lm(model_manifest.resolve(path=tiny_hub_models[family])) for family in HEAD_FAMILIES}
