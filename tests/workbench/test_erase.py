"""Erasure on real block devices: loop devices over files of random data."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workbench.loops import MIB, loops_needed, make
from workbench import erase

FIXTURES = Path(__file__).parent / "fixtures" / "purge"


@loops_needed
def test_clear_overwrites_every_byte_and_verifies_it(loops, tmp_path):
    loop = make(loops, tmp_path, 16 * MIB + 512 * 3)  # a tail shorter than one chunk
    assert loop.contents().count(0) < len(loop.contents())

    evidence = erase.erase(loop.drive(), tmp_path / "out", method="auto")

    assert loop.contents() == bytes(16 * MIB + 512 * 3)
    assert (evidence.result, evidence.verified, evidence.method) == ("passed", True, "clear")
    assert evidence.bytes_written == evidence.bytes_verified == 16 * MIB + 512 * 3
    assert (evidence.passes, evidence.verification, evidence.unreadable_sectors) == (
        1,
        "full read-back",
        0,
    )
    log = tmp_path / "out" / evidence.log_file
    assert hashlib.sha256(log.read_bytes()).hexdigest() == evidence.log_sha256
    assert "result: passed" in log.read_text()
    stored = erase.Evidence.model_validate_json(
        (tmp_path / "out" / f"erasure-{evidence.serial}.json").read_text()
    )
    assert stored == evidence


@loops_needed
def test_the_pattern_is_any_byte_and_sampled_verification_records_its_rate(loops, tmp_path):
    loop = make(loops, tmp_path, 40 * MIB)

    evidence = erase.erase(loop.drive(), tmp_path, method="clear", pattern=0xA5, sample_rate=0.25)

    assert loop.contents() == b"\xa5" * (40 * MIB)
    assert evidence.result == "passed"
    assert evidence.verification == "sampled read-back (25%)"
    assert evidence.verification_sample_rate == 0.25
    assert 0 < evidence.bytes_verified < 40 * MIB


@loops_needed
def test_a_read_only_drive_ends_with_a_failed_record(loops, tmp_path):
    loop = make(loops, tmp_path, 8 * MIB, read_only=True)
    before = loop.contents()

    evidence = erase.erase(loop.drive(), tmp_path)

    assert (evidence.result, evidence.verified) == ("failed", False)
    assert evidence.bytes_written == 0
    assert "write" in (evidence.error or "")
    assert loop.contents() == before


@loops_needed
def test_a_drive_that_vanishes_mid_run_ends_with_a_failed_record(loops, tmp_path):
    loop = make(loops, tmp_path, 16 * MIB)

    def pull_the_drive(phase: str, done: int, total: int) -> None:
        if phase == "write" and done == erase.CHUNK:
            os.truncate(loop.file, 0)
            subprocess.run(["losetup", "--set-capacity", loop.device], check=True)

    evidence = erase.erase(loop.drive(), tmp_path, progress=pull_the_drive)

    assert (evidence.result, evidence.verified) == ("failed", False)
    # the blocks already in flight when the drive went may have landed; none issued after it
    assert evidence.bytes_written % erase.CHUNK == 0
    assert erase.CHUNK <= evidence.bytes_written <= erase.IN_FLIGHT * erase.CHUNK < 16 * MIB
    assert "write failed" in (evidence.error or "")
    assert f"write failed at byte {evidence.bytes_written}" in (evidence.error or "")


@loops_needed
def test_data_that_reappears_before_verification_fails_it(loops, tmp_path):
    loop = make(loops, tmp_path, 16 * MIB)

    def corrupt_after_writing(phase: str, done: int, total: int) -> None:
        if phase == "write" and done == total:
            with loop.file.open("r+b") as f:
                f.seek(9 * MIB)
                f.write(b"left over")

    evidence = erase.erase(loop.drive(), tmp_path, progress=corrupt_after_writing)

    assert (evidence.result, evidence.mismatched_blocks) == ("failed", 1)
    assert "pattern mismatch" in (evidence.error or "")


@loops_needed
def test_a_mounted_drive_is_refused_before_anything_is_written(loops, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (Debian package: e2fsprogs)")
    loop = make(loops, tmp_path, 16 * MIB)
    subprocess.run(["mkfs.ext4", "-q", loop.device], check=True)
    (tmp_path / "mnt").mkdir()
    subprocess.run(["mount", loop.device, str(tmp_path / "mnt")], check=True)
    before = loop.contents()

    with pytest.raises(erase.Refused, match="it is mounted"):
        erase.erase(loop.drive(), tmp_path)

    assert loop.contents() == before


def test_the_drive_holding_the_root_filesystem_is_refused():
    boot = [d for d in erase.current_drives() if "/" in d.mountpoints]
    if not boot:
        pytest.skip("/ is not on a block device here (an overlay or tmpfs root)")

    with pytest.raises(erase.Refused, match="the workbench booted from it"):
        erase.erase(boot[0], Path("/nonexistent"))


def test_sampled_regions_always_include_the_first_and_last_block():
    regions = erase._sampled(100 * MIB, MIB, 0.1, seed=7)

    assert regions[0] == (0, MIB)
    assert regions[-1] == (99 * MIB, MIB)
    assert len(regions) == 10
    assert regions == sorted(set(regions))


def test_nvme_purge_is_detected_from_the_controller_capabilities():
    text = (FIXTURES / "nvme-id-ctrl.json").read_text()

    (found,) = erase.nvme_purges(text, "/dev/nvme0", "/dev/nvme0n1")

    # OACS 23 has bit 1 (format), FNA 5 has bit 2 (crypto erase); SANICAP 0: no sanitize
    assert found.technique == "NVMe format, secure erase (cryptographic erase)"
    assert found.commands == [["format", "/dev/nvme0n1", "--ses=2", "--force"]]
    with_sanitize = text.replace('"sanicap" : 0', '"sanicap" : 3')
    techniques = [p.technique for p in erase.nvme_purges(with_sanitize, "/dev/nvme0", "n1")]
    assert techniques[:2] == ["NVMe sanitize, cryptographic erase", "NVMe sanitize, block erase"]


def test_ata_secure_erase_is_offered_only_when_not_frozen():
    ready = erase.ata_purges((FIXTURES / "hdparm-I-sdb.txt").read_text(), "/dev/sdb")
    frozen = erase.ata_purges((FIXTURES / "hdparm-I-frozen.txt").read_text(), "/dev/sdb")

    assert [p.technique for p in ready] == ["ATA Secure Erase (enhanced)"]
    assert ready[0].commands[1][:3] == ["--user-master", "u", "--security-erase-enhanced"]
    assert frozen == []


def test_verification_finds_a_wrong_first_or_last_byte_or_a_wrong_block(tmp_path):
    # a plain file stands in for the drive: the in-place check of each block is what is tested
    blocks = 3 * erase.IN_FLIGHT + 1
    data = bytearray(b"\xa5" * (blocks * erase.CHUNK - 512))  # a shorter last block
    data[1 * erase.CHUNK] = 0xA4  # first byte of block 1
    data[5 * erase.CHUNK - 1] = 0x00  # last byte of block 4
    data[7 * erase.CHUNK : 8 * erase.CHUNK] = bytes(erase.CHUNK)  # a whole block of another byte
    data[-1] = 0xFF  # last byte of the drive
    drive = tmp_path / "drive"
    drive.write_bytes(data)
    regions = list(erase._chunks(len(data), erase.CHUNK))
    seen: list[int] = []

    fd = os.open(drive, os.O_RDONLY)
    try:
        checked = erase._verify(
            fd, regions, 0xA5, 512, lambda phase, done, total: seen.append(done), len(data)
        )
    finally:
        os.close(fd)

    assert (checked.mismatched, checked.unreadable) == (4, 0)
    assert checked.first_problem == f"pattern mismatch at {erase.CHUNK}"
    assert checked.bytes_read == len(data)
    assert seen == sorted(seen)
    assert (seen[-1], len(seen)) == (len(data), blocks)
    drive.write_bytes(b"\xa5" * len(data))
    fd = os.open(drive, os.O_RDONLY)
    try:
        assert erase._verify(fd, regions, 0xA5, 512, lambda *_: None, len(data)).mismatched == 0
    finally:
        os.close(fd)
