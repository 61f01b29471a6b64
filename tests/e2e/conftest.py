from collections.abc import Iterator

import pytest

from tools.cluster import Cluster, project_root, running_cluster


@pytest.fixture(scope="module")
def cluster(topics, base_env, namespace) -> Iterator[Cluster]:
    with running_cluster(base_env, project_root() / ".local" / "test-logs" / namespace) as c:
        yield c
