"""The snapshot parsers on this machine's real tools and on recorded machines' outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workbench import snapshot

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> snapshot.Snapshot:
    return snapshot.build(snapshot.load_raw(FIXTURES / name))


def test_a_laptop_with_nvme_and_battery_is_read_whole():
    snap = recorded("thinkpad-t480")

    assert (snap.manufacturer, snap.model, snap.serial) == ("LENOVO", "20L5CTO1WW", "PF1ABCDE")
    assert (snap.chassis_type, snap.category) == ("Notebook", "laptop")
    assert snap.cpu.model == "Intel(R) Core(TM) i5-8350U CPU @ 1.70GHz"
    assert (snap.cpu.cores, snap.cpu.threads, snap.cpu.max_mhz) == (4, 8, 3600.0)
    assert snap.ram_bytes == 16 * 2**30
    nvme = next(d for d in snap.drives if d.name == "nvme0n1")
    assert (nvme.kind, nvme.transport, nvme.serial) == ("nvme", "nvme", "S41GNX0M612345")
    assert (nvme.size_bytes, nvme.smart_passed, nvme.power_on_hours) == (256060514304, True, 6143)
    assert (nvme.media_errors, nvme.percentage_used) == (0, 7)
    (battery,) = snap.batteries
    assert (battery.design_capacity, battery.full_capacity, battery.capacity_unit) == (
        24.0,
        17.28,
        "Wh",
    )
    assert (battery.wear_pct, battery.health_pct, battery.cycle_count) == (28.0, 72, 412)
    assert [(n.name, n.mac, n.kind) for n in snap.network] == [
        ("enp0s31f6", "8c:16:45:5a:3b:21", "ethernet"),
        ("wlp3s0", "e4:70:b8:1c:2d:3e", "wireless"),
    ]
    stick = next(d for d in snap.drives if d.name == "sda")
    assert stick.mountpoints == ["/run/live/medium"]
    assert [(u.field, u.reason) for u in snap.unread] == [
        (
            "drives[sda].smart",
            "the drive answers no SMART data (smartctl: /dev/sda: Unknown USB bridge "
            "[0x0781:0x5583 (0x100)])",
        )
    ]


def test_a_desktop_with_two_sata_drives_and_no_lshw_says_what_it_missed():
    snap = recorded("optiplex-7050")

    assert (snap.manufacturer, snap.model, snap.serial) == ("Dell Inc.", "OptiPlex 7050", "7XK2JK2")
    assert (snap.chassis_type, snap.category) == ("Mini Tower", "desktop")
    assert snap.ram_bytes == 8 * 2**30  # two 4096 MB modules, one empty slot
    hdd, ssd = (next(d for d in snap.drives if d.name == n) for n in ("sda", "sdb"))
    assert (hdd.kind, hdd.transport, hdd.model) == ("hdd", "sata", "ST500DM002-1SB10A")
    assert (hdd.power_on_hours, hdd.reallocated_sectors, hdd.smart_passed) == (27714, 48, True)
    assert (ssd.kind, ssd.reallocated_sectors, ssd.power_on_hours) == ("ssd", 0, 14302)
    assert snap.batteries == []
    assert [n.mac for n in snap.network] == ["98:90:96:c1:2a:7f"]
    # lshw was missing but dmidecode and lscpu covered its fields; the USB stick has no SMART
    assert [u.field for u in snap.unread] == ["drives[sdc].smart"]
    assert "smartctl" in snap.unread[0].reason


def test_a_machine_without_smart_or_dmi_lists_what_it_could_not_read():
    snap = recorded("firecracker-vm")

    assert snap.cpu.model == "AMD EPYC"
    assert snap.ram_bytes == 25769803776
    (disk,) = snap.drives
    assert (disk.name, disk.smart_available, disk.mountpoints) == ("vda", False, ["/"])
    unread = {u.field: u.reason for u in snap.unread}
    assert {"manufacturer", "model", "serial", "chassis_type", "drives[vda].smart"} <= set(unread)
    assert "/dev/mem" in unread["serial"]
    assert snap.category == "other"


def test_a_missing_tool_names_its_debian_package():
    raw = snapshot.load_raw(FIXTURES / "thinkpad-t480")
    for name in [n for n in raw if n.startswith(("smartctl-", "dmidecode", "lshw"))]:
        del raw[name]
    raw |= {"missing-smartctl": "smartmontools", "missing-dmidecode": "dmidecode"}
    raw["missing-lshw"] = "lshw"

    snap = snapshot.build(raw)

    reasons = {u.field: u.reason for u in snap.unread}
    assert "Debian package: smartmontools" in reasons["drives[nvme0n1].smart"]
    assert "Debian package: dmidecode" in reasons["serial"]
    assert "Debian package: lshw" in reasons["serial"]
    assert snap.serial is None


def test_the_snapshot_round_trips_as_versioned_json():
    snap = recorded("thinkpad-t480")
    data = json.loads(snap.model_dump_json())

    assert data["schema_version"] == snapshot.SCHEMA_VERSION
    assert snapshot.Snapshot.model_validate(data) == snap
    assert "PF1ABCDE" in snapshot.summary(snap)
    assert "wear 28.0%" in snapshot.summary(snap)


@pytest.mark.parametrize("tool", ["lsblk", "lscpu"])
def test_this_machine_is_read_by_its_real_tools(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed here")
    snap, raw = snapshot.take()

    assert snap.cpu.model
    assert (snap.cpu.threads or 0) >= 1
    assert snap.drives, "lsblk lists at least the disk this test runs from"
    root = next(d for d in snap.drives if "/" in d.mountpoints)
    assert root.size_bytes > 0
    for missing in ("lshw", "dmidecode", "smartctl"):
        if shutil.which(missing) is None:
            assert raw[f"missing-{missing}"]
        else:
            assert f"missing-{missing}" not in raw
    assert snap.tools["lsblk"].startswith("lsblk from util-linux")
