import os

import pytest
from mesh_client import Mesh


@pytest.fixture(scope="session")
def mesh() -> Mesh:
    if "HARNESS_URL_FRONT" not in os.environ:
        pytest.fail(
            "these tests are run by harness's integration gate, which starts the services "
            "and sets the HARNESS_* variables"
        )
    return Mesh.from_environment()
