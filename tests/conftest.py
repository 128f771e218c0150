import pytest
from _helpers import make_net

from astra_core.model.actions import AstraNet


@pytest.fixture
def tiny_net() -> AstraNet:
    return make_net()
