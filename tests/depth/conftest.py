"""One torch thread for the depth tests: their forwards are tiny, and on a shared 2-core machine a
second thread makes each one tens of times slower, not faster."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
