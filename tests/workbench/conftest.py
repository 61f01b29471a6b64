from collections.abc import Iterator

import pytest

from tests.workbench.loops import Loop, attached


@pytest.fixture
def loops() -> Iterator[list[Loop]]:
    with attached() as made:
        yield made
