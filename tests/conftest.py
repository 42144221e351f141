import os

import pytest
import torch

# Tests measure correctness, not speed; one thread keeps them deterministic and
# avoids fighting over the two CI cores.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_model():
    """A very small random Qwen2 model with a character tokenizer."""
    from grpokit.model.policy import create_tiny

    model, tok = create_tiny("tiny:xs", ["Compute 1+2. <think>1+2=3</think><answer>3</answer>"], seed=0)
    return model.eval(), tok
