"""What the key CLI accepts, and how failed authentications are counted per address."""

import pytest

from shared.auth import FailedAuthentications, main, valid_partner


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("partner", "name", "reason"),
    [
        ("a" * 201, "Acme", "at most 200 characters"),
        ("acme", "A" * 250, "at most 200 characters"),
        ("", "Acme", "at least 1 character"),
        ("acme consulate", "Acme", "letters, digits"),
        ("-acme", "Acme", "letters, digits"),
        ("acme/../x", "Acme", "letters, digits"),
        ("acme", "   ", "not only spaces"),
        ("acme", "Acme\nIT", "no control characters"),
    ],
)
def test_create_key_refuses_a_partner_id_or_name_the_events_would_refuse_with_exit_2(
    capsys, partner, name, reason
):
    with pytest.raises(SystemExit) as exited:
        main(["create-key", "--role", "donor", f"--partner={partner}", f"--name={name}"])

    assert exited.value.code == 2
    assert reason in capsys.readouterr().err


def test_the_longest_id_and_name_are_accepted():
    valid_partner("a" * 200, "É" * 200)
    valid_partner("school-rosa-parks.2_b", "Lena (warehouse)")


def test_an_address_waits_once_it_failed_the_limit_within_the_window():
    clock = Clock()
    limits = FailedAuthentications(3, window_s=60, clock=clock)
    for _ in range(3):
        assert limits.retry_after("10.0.0.1") is None
        limits.failed("10.0.0.1")
        clock.now += 10

    assert limits.retry_after("10.0.0.1") == 30  # the first failure leaves the window at +60 s
    assert limits.retry_after("10.0.0.2") is None

    clock.now += 30
    assert limits.retry_after("10.0.0.1") is None  # a sliding window: one more try now


def test_a_key_that_worked_from_an_address_is_trusted_there_only():
    clock = Clock()
    limits = FailedAuthentications(1, trust_s=3600, clock=clock)
    limits.succeeded("10.0.0.1", "hash-a")

    assert limits.trusts("10.0.0.1", "hash-a")
    assert not limits.trusts("10.0.0.1", "hash-b")
    assert not limits.trusts("10.0.0.2", "hash-a")
    clock.now += 3601
    assert not limits.trusts("10.0.0.1", "hash-a")


def test_zero_turns_the_limit_off():
    limits = FailedAuthentications(0)
    for _ in range(1000):
        limits.failed("10.0.0.1")

    assert limits.retry_after("10.0.0.1") is None


def test_memory_stays_bounded_by_the_number_of_addresses():
    limits = FailedAuthentications(5, max_addresses=100)
    for i in range(1000):
        limits.failed(f"10.0.{i // 256}.{i % 256}")
        limits.succeeded(f"10.0.{i // 256}.{i % 256}", "h")

    assert len(limits._failures) == 100
    assert len(limits._trusted) == 100
