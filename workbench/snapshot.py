"""The snapshot: what the machine says about itself, read with Debian's standard tools.

`gather` runs the tools and keeps their raw output (`Raw`: one text per tool and drive, the same
names as the files of a recorded machine under `tests/workbench/fixtures/`); `build` turns raw
outputs into a `Snapshot` with pure parsers, so a recorded machine and this one go through the
same code. What no tool could tell is listed in `Snapshot.unread`, never guessed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

from workbench import TOOL_NAME, VERSION, probe

SCHEMA_VERSION = "1.0"

DriveKind = Literal["hdd", "ssd", "nvme", "emmc", "other"]
Category = Literal["laptop", "desktop", "monitor", "tablet", "phone", "other"]

# SMBIOS 3.x chassis types (dmidecode's words, lshw's lower-case ids) -> diagnostics' category.
CHASSIS_CATEGORY: dict[str, Category] = {
    "desktop": "desktop",
    "low profile desktop": "desktop",
    "pizza box": "desktop",
    "mini tower": "desktop",
    "tower": "desktop",
    "space-saving": "desktop",
    "all in one": "desktop",
    "all-in-one": "desktop",
    "mini pc": "desktop",
    "stick pc": "desktop",
    "lunch box": "desktop",
    "main server chassis": "other",
    "rack mount chassis": "other",
    "portable": "laptop",
    "laptop": "laptop",
    "notebook": "laptop",
    "sub notebook": "laptop",
    "convertible": "laptop",
    "detachable": "tablet",
    "tablet": "tablet",
    "hand held": "phone",
    "handheld": "phone",
}

# Placeholders vendors leave in the firmware's fields: no information.
_PLACEHOLDERS = re.compile(
    r"^(to be filled by o\.?e\.?m\.?|default string|system (serial number|product name|"
    r"manufacturer)|not specified|not applicable|none|unknown|n/a|o\.?e\.?m\.?|0+|x+|"
    r"0123456789|123456789|chassis serial number|system version)$",
    re.IGNORECASE,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cpu(Model):
    model: str | None = None
    vendor: str | None = None
    cores: int | None = Field(None, description="Physical cores: cores per socket x sockets")
    threads: int | None = None
    max_mhz: float | None = None


class DriveInfo(Model):
    name: str = Field(description="Kernel name, e.g. sda, nvme0n1")
    path: str
    model: str | None = None
    serial: str | None = None
    size_bytes: int
    kind: DriveKind
    transport: str | None = Field(None, description="sata, nvme, usb, ... as lsblk names it")
    removable: bool = False
    read_only: bool = False
    mountpoints: list[str] = Field(default_factory=list, description="Its own and partitions'")
    smart_available: bool = False
    smart_passed: bool | None = None
    power_on_hours: int | None = None
    reallocated_sectors: int | None = None
    media_errors: int | None = Field(None, description="NVMe media and data integrity errors")
    percentage_used: int | None = Field(None, description="NVMe endurance used, %")


class Battery(Model):
    name: str
    manufacturer: str | None = None
    model: str | None = None
    technology: str | None = None
    serial: str | None = None
    design_capacity: float | None = Field(None, description="Wh, or Ah when only charge is known")
    full_capacity: float | None = None
    capacity_unit: Literal["Wh", "Ah"] | None = None
    cycle_count: int | None = None
    wear_pct: float | None = Field(None, description="100 x (1 - full / design), >= 0")
    health_pct: int | None = Field(None, description="100 - wear, what diagnostics grades")


class Nic(Model):
    name: str
    mac: str
    kind: Literal["ethernet", "wireless", "other"] = "other"


class Unread(Model):
    field: str
    reason: str


class Snapshot(Model):
    """One machine as read by the workbench. Versioned: fields are only ever added."""

    schema_version: str = SCHEMA_VERSION
    snapshot_id: UUID = Field(default_factory=uuid4)
    taken_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    workbench: str = f"{TOOL_NAME} {VERSION}"
    hostname: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    chassis_type: str | None = None
    category: Category = "other"
    cpu: Cpu = Field(default_factory=Cpu)
    ram_bytes: int | None = None
    drives: list[DriveInfo] = Field(default_factory=list)
    batteries: list[Battery] = Field(default_factory=list)
    network: list[Nic] = Field(default_factory=list)
    tools: dict[str, str] = Field(default_factory=dict, description="tool -> version or missing")
    unread: list[Unread] = Field(default_factory=list)

    @property
    def ram_gb(self) -> float | None:
        return round(self.ram_bytes / 2**30, 1) if self.ram_bytes else None


Raw = dict[str, str]
"""Raw outputs by name: lshw.json, dmidecode.txt, lsblk.json, lscpu.json, smartctl-<dev>.json,
power_supply-<name>.uevent, net-<name>.address / .type / .wireless; missing-<tool> names a tool
that was not installed (its value: the Debian package)."""

LSBLK_COLUMNS = "NAME,PATH,TYPE,SIZE,ROTA,TRAN,MODEL,SERIAL,RM,RO,MOUNTPOINT,PKNAME"


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text or _PLACEHOLDERS.match(text):
        return None
    return text


def _call(raw: Raw, name: str, tool: str, *args: str) -> None:
    try:
        out = probe.run(tool, *args)
    except probe.MissingTool as exc:
        raw[f"missing-{tool}"] = exc.package
        return
    except (OSError, subprocess.TimeoutExpired) as exc:
        raw[f"error-{name}"] = str(exc)
        return
    if out.stdout.strip():
        raw[name] = out.stdout
    if out.returncode != 0 and out.stderr.strip():
        raw[f"error-{name}"] = out.stderr.strip()


def gather(sys_root: Path = Path("/sys"), loops: Iterable[str] = ()) -> Raw:
    """Run every tool once and read sysfs; nothing is parsed here. `loops` names loop devices
    (loop3) to take as the machine's drives."""
    raw: Raw = {}
    for loop in loops:
        backing = sys_root / "block" / loop / "loop" / "backing_file"
        raw[f"loop-{loop}.backing_file"] = backing.read_text().strip() if backing.exists() else loop
    _call(raw, "lshw.json", "lshw", "-json", "-quiet")
    _call(raw, "dmidecode.txt", "dmidecode")
    _call(raw, "lscpu.json", "lscpu", "--json")
    _call(raw, "lsblk.json", "lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS)
    for disk in _disks(raw.get("lsblk.json")):
        if disk.get("type") == "disk" and not str(disk.get("name", "")).startswith(("zram", "ram")):
            _call(raw, f"smartctl-{disk['name']}.json", "smartctl", "--json", "-a", disk["path"])
            if "missing-smartctl" in raw:
                break
    supplies = sys_root / "class" / "power_supply"
    for supply in sorted(supplies.iterdir()) if supplies.is_dir() else []:
        uevent = supply / "uevent"
        if uevent.is_file():
            raw[f"power_supply-{supply.name}.uevent"] = uevent.read_text(errors="replace")
    nets = sys_root / "class" / "net"
    for nic in sorted(nets.iterdir()) if nets.is_dir() else []:
        if not (nic / "device").exists():
            continue  # virtual: lo, bridges, tunnels
        raw[f"net-{nic.name}.address"] = (nic / "address").read_text().strip()
        raw[f"net-{nic.name}.wireless"] = "yes" if (nic / "wireless").exists() else "no"
    raw["hostname"] = socket.gethostname()
    return raw


def save_raw(raw: Raw, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in raw.items():
        (directory / name).write_text(text)


def load_raw(directory: Path) -> Raw:
    return {p.name: p.read_text() for p in sorted(directory.iterdir()) if p.is_file()}


# ---- parsers: raw text in, facts out ----------------------------------------------------------


def parse_dmidecode(text: str) -> list[tuple[str, dict[str, str | list[str]]]]:
    """dmidecode's text output as (section title, {key: value}) in order; a key followed by
    indented lines (Characteristics, Features) holds them as a list."""
    sections: list[tuple[str, dict[str, str | list[str]]]] = []
    fields: dict[str, str | list[str]] | None = None
    last_key: str | None = None
    for line in text.splitlines():
        if line.startswith("Handle "):
            fields = None
            continue
        if line and not line[0].isspace():
            fields = {}
            sections.append((line.strip(), fields))
            last_key = None
            continue
        if fields is None or not line.strip():
            continue
        depth = len(line) - len(line.lstrip("\t"))
        if depth >= 2 and last_key is not None:
            existing = fields.get(last_key)
            items = existing if isinstance(existing, list) else []
            items.append(line.strip())
            fields[last_key] = items
            continue
        key, sep, value = line.strip().partition(":")
        if sep:
            last_key = key.strip()
            fields[last_key] = value.strip() if value.strip() else []
    return sections


def _dmi_size_bytes(text: str) -> int | None:
    match = re.fullmatch(r"(\d+)\s*(kB|KB|MB|GB|TB)", text.strip())
    if match is None:
        return None
    factor = {"kB": 2**10, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[match.group(2)]
    return int(match.group(1)) * factor


def _lshw_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("children", []):
        found.extend(_lshw_nodes(child))
    return found


def parse_lshw(text: str) -> list[dict[str, Any]]:
    """Every node of `lshw -json`, flattened. Old lshw prints a list of roots, new one a dict."""
    data = json.loads(text)
    roots = data if isinstance(data, list) else [data]
    return [n for root in roots for n in _lshw_nodes(root)]


def _disks(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    devices: list[dict[str, Any]] = json.loads(text).get("blockdevices", [])
    return devices


def _mountpoints(device: dict[str, Any]) -> list[str]:
    points = [device.get("mountpoint"), *(device.get("mountpoints") or [])]
    found = [p for p in points if p]
    for child in device.get("children", []) or []:
        found.extend(_mountpoints(child))
    return sorted(set(found))


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def parse_lsblk(text: str, loops: Iterable[str] = ()) -> list[DriveInfo]:
    """Whole disks of `lsblk --json --bytes` (zram and ramdisks are memory, not drives); loop
    devices only those named in `loops` (a live system's own image is one; tests erase some)."""
    drives: list[DriveInfo] = []
    for device in _disks(text):
        name = str(device["name"])
        if device.get("type") == "loop" and name not in loops:
            continue
        if device.get("type") not in ("disk", "loop") or name.startswith(("zram", "ram")):
            continue
        size = int(device.get("size") or 0)
        if size == 0:
            continue
        transport = _clean(device.get("tran"))
        if name.startswith("nvme") or transport == "nvme":
            kind: DriveKind = "nvme"
        elif name.startswith("mmcblk"):
            kind = "emmc"
        elif device.get("type") == "loop":
            kind = "other"
        elif _flag(device.get("rota")):
            kind = "hdd"
        else:
            kind = "ssd"
        drives.append(
            DriveInfo(
                name=name,
                path=str(device.get("path") or f"/dev/{name}"),
                model=_clean(device.get("model")),
                serial=_clean(device.get("serial")),
                size_bytes=size,
                kind=kind,
                transport=transport,
                removable=_flag(device.get("rm")),
                read_only=_flag(device.get("ro")),
                mountpoints=_mountpoints(device),
            )
        )
    return drives


def parse_smartctl(text: str) -> dict[str, Any]:
    """The health facts of `smartctl --json -a` for ATA, NVMe and SCSI drives."""
    data = json.loads(text)
    facts: dict[str, Any] = {"smart_available": False}
    status = data.get("smart_status")
    if isinstance(status, dict) and "passed" in status:
        facts["smart_available"] = True
        facts["smart_passed"] = bool(status["passed"])
    hours = (data.get("power_on_time") or {}).get("hours")
    nvme = data.get("nvme_smart_health_information_log") or {}
    if hours is None:
        hours = nvme.get("power_on_hours")
    if hours is not None:
        facts["power_on_hours"] = int(hours)
    for attribute in (data.get("ata_smart_attributes") or {}).get("table", []):
        if attribute.get("id") == 5:
            facts["reallocated_sectors"] = int(attribute["raw"]["value"])
    if "media_errors" in nvme:
        facts["media_errors"] = int(nvme["media_errors"])
    if "percentage_used" in nvme:
        facts["percentage_used"] = int(nvme["percentage_used"])
    if "scsi_grown_defect_list" in data:
        facts["reallocated_sectors"] = int(data["scsi_grown_defect_list"])
    for key, field in (("model_name", "model"), ("serial_number", "serial")):
        if _clean(data.get(key)):
            facts[field] = str(data[key]).strip()
    messages = (data.get("smartctl") or {}).get("messages") or []
    errors = [str(m.get("string")) for m in messages if m.get("severity") == "error"]
    if errors:
        facts["error"] = errors[0]
    rotation = data.get("rotation_rate")
    if rotation is not None:
        facts["rotation_rate"] = int(rotation)
    return facts


def parse_lscpu(text: str) -> Cpu:
    """`lscpu --json`: new versions nest fields under children; both shapes are walked."""

    def walk(items: list[dict[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for item in items:
            found.setdefault(str(item["field"]).rstrip(":"), str(item.get("data") or ""))
            found.update(
                {k: v for k, v in walk(item.get("children", [])).items() if k not in found}
            )
        return found

    fields = walk(json.loads(text)["lscpu"])

    def number(name: str) -> int | None:
        value = fields.get(name, "")
        return int(value) if value.isdigit() else None

    cores = number("Core(s) per socket") or number("Core(s) per cluster")
    sockets = number("Socket(s)") or number("Cluster(s)") or 1
    mhz = fields.get("CPU max MHz") or ""
    return Cpu(
        model=_clean(fields.get("Model name")),
        vendor=_clean(fields.get("Vendor ID")),
        cores=cores * sockets if cores else None,
        threads=number("CPU(s)"),
        max_mhz=float(mhz) if re.fullmatch(r"\d+(\.\d+)?", mhz) else None,
    )


def parse_uevent(name: str, text: str) -> Battery | None:
    """A `/sys/class/power_supply/<name>/uevent`; None unless it is a battery."""
    values = dict(
        line.removeprefix("POWER_SUPPLY_").split("=", 1)
        for line in text.splitlines()
        if "=" in line
    )
    if values.get("TYPE") != "Battery" or values.get("PRESENT", "1") == "0":
        return None
    design: float | None = None
    full: float | None = None
    unit: Literal["Wh", "Ah"] | None = None
    for prefix, this_unit in (("ENERGY", "Wh"), ("CHARGE", "Ah")):
        if f"{prefix}_FULL_DESIGN" in values and f"{prefix}_FULL" in values:
            design = int(values[f"{prefix}_FULL_DESIGN"]) / 1_000_000
            full = int(values[f"{prefix}_FULL"]) / 1_000_000
            unit = "Wh" if this_unit == "Wh" else "Ah"
            break
    wear = None
    health = None
    if design and full is not None:
        wear = round(max(0.0, 100 * (1 - full / design)), 1)
        health = max(0, min(100, round(100 * full / design)))
    cycles = values.get("CYCLE_COUNT", "")
    return Battery(
        name=name,
        manufacturer=_clean(values.get("MANUFACTURER")),
        model=_clean(values.get("MODEL_NAME")),
        technology=_clean(values.get("TECHNOLOGY")),
        serial=_clean(values.get("SERIAL_NUMBER")),
        design_capacity=design,
        full_capacity=full,
        capacity_unit=unit,
        cycle_count=int(cycles) if cycles.isdigit() else None,
        wear_pct=wear,
        health_pct=health,
    )


def category_of(chassis: str | None) -> Category:
    return CHASSIS_CATEGORY.get((chassis or "").strip().lower(), "other")


# ---- build: raw outputs -> snapshot ---------------------------------------------------------


def build(raw: Raw, *, tools: dict[str, str] | None = None) -> Snapshot:
    """The snapshot of raw outputs; loop devices count as drives when their backing file was
    recorded (`loop-<name>.backing_file`, see `gather(loops=...)`)."""
    unread: list[Unread] = []
    missing = {k.removeprefix("missing-"): v for k, v in raw.items() if k.startswith("missing-")}

    def why(tool: str) -> str:
        if tool in missing:
            return f"{tool} is not installed (Debian package: {missing[tool]})"
        error = next((v for k, v in raw.items() if k.startswith(f"error-{tool}")), "")
        return f"{tool} could not tell" + (f": {error.splitlines()[0]}" if error else "")

    dmi = parse_dmidecode(raw.get("dmidecode.txt", ""))
    dmi_first = {title: fields for title, fields in reversed(dmi)}
    system = dmi_first.get("System Information", {})
    chassis = dmi_first.get("Chassis Information", {})
    nodes = parse_lshw(raw["lshw.json"]) if "lshw.json" in raw else []
    root = next((n for n in nodes if n.get("class") == "system"), {})

    def firmware(dmi_key: str, lshw_key: str) -> str | None:
        value = system.get(dmi_key)
        return _clean(value if isinstance(value, str) else None) or _clean(root.get(lshw_key))

    snap = Snapshot(
        hostname=raw.get("hostname"),
        manufacturer=firmware("Manufacturer", "vendor"),
        model=firmware("Product Name", "product"),
        serial=firmware("Serial Number", "serial"),
        tools=tools or {},
    )
    for field in ("manufacturer", "model", "serial"):
        if getattr(snap, field) is None:
            unread.append(Unread(field=field, reason=f"{why('dmidecode')}; {why('lshw')}"))
    chassis_type = chassis.get("Type")
    chassis_text = _clean(chassis_type if isinstance(chassis_type, str) else None) or _clean(
        (root.get("configuration") or {}).get("chassis")
    )
    snap.chassis_type = chassis_text
    snap.category = category_of(chassis_text)
    if chassis_text is None:
        unread.append(Unread(field="chassis_type", reason=f"{why('dmidecode')}; {why('lshw')}"))

    if "lscpu.json" in raw:
        snap.cpu = parse_lscpu(raw["lscpu.json"])
    else:
        cpu_node = next((n for n in nodes if n.get("class") == "processor"), None)
        if cpu_node is not None:
            snap.cpu = Cpu(model=_clean(cpu_node.get("product")), vendor=cpu_node.get("vendor"))
    if snap.cpu.model is None:
        unread.append(Unread(field="cpu.model", reason=f"{why('lscpu')}; {why('lshw')}"))
    if snap.cpu.cores is None:
        unread.append(Unread(field="cpu.cores", reason=why("lscpu")))

    dimms = [
        _dmi_size_bytes(str(f.get("Size", "")))
        for title, f in dmi
        if title == "Memory Device" and isinstance(f.get("Size"), str)
    ]
    if any(dimms):
        snap.ram_bytes = sum(d for d in dimms if d)
    else:
        memory = next(
            (
                n
                for n in nodes
                if n.get("class") == "memory" and n.get("id", "").startswith("memory")
            ),
            None,
        )
        if memory is not None and memory.get("size"):
            snap.ram_bytes = int(memory["size"])
        else:
            unread.append(Unread(field="ram_bytes", reason=f"{why('dmidecode')}; {why('lshw')}"))

    if "lsblk.json" in raw:
        loops = {
            k.removeprefix("loop-").removesuffix(".backing_file"): v.strip()
            for k, v in raw.items()
            if k.startswith("loop-") and k.endswith(".backing_file")
        }
        snap.drives = [
            d.model_copy(update={"serial": f"LOOP-{Path(loops[d.name]).name}", "model": "loop"})
            if d.name in loops and d.serial is None
            else d
            for d in parse_lsblk(raw["lsblk.json"], loops)
        ]
    else:
        unread.append(Unread(field="drives", reason=why("lsblk")))
    for i, drive in enumerate(snap.drives):
        text = raw.get(f"smartctl-{drive.name}.json")
        facts = parse_smartctl(text) if text else {}
        if not facts.get("smart_available") and drive.kind != "other":
            reason = why("smartctl") if text is None else "the drive answers no SMART data"
            if facts.get("error"):
                reason += f" (smartctl: {facts['error']})"
            unread.append(Unread(field=f"drives[{drive.name}].smart", reason=reason))
        update = {k: v for k, v in facts.items() if k in DriveInfo.model_fields}
        for key in ("model", "serial"):
            if getattr(drive, key) is not None:
                update.pop(key, None)
        if facts.get("rotation_rate") == 0 and drive.kind == "hdd":
            update["kind"] = "ssd"  # virtualised or USB-bridged SSDs report rota=1 to lsblk
        snap.drives[i] = drive.model_copy(update=update)
        if snap.drives[i].serial is None:
            unread.append(Unread(field=f"drives[{drive.name}].serial", reason=why("smartctl")))

    for name, text in raw.items():
        if name.startswith("power_supply-") and name.endswith(".uevent"):
            battery = parse_uevent(name.removeprefix("power_supply-").removesuffix(".uevent"), text)
            if battery is not None:
                snap.batteries.append(battery)

    macs: dict[str, Nic] = {}
    for node in nodes:
        if node.get("class") == "network" and node.get("serial") and node.get("logicalname"):
            wireless = "wireless" in str(node.get("capabilities") or {}).lower()
            macs[str(node["logicalname"])] = Nic(
                name=str(node["logicalname"]),
                mac=str(node["serial"]).lower(),
                kind="wireless" if wireless else "ethernet",
            )
    for name, text in raw.items():
        if name.startswith("net-") and name.endswith(".address"):
            nic = name.removeprefix("net-").removesuffix(".address")
            wireless = raw.get(f"net-{nic}.wireless") == "yes"
            macs.setdefault(
                nic, Nic(name=nic, mac=text.strip(), kind="wireless" if wireless else "ethernet")
            )
    snap.network = sorted(macs.values(), key=lambda n: n.name)
    snap.unread = unread
    return snap


def take(sys_root: Path = Path("/sys"), loops: Iterable[str] = ()) -> tuple[Snapshot, Raw]:
    raw = gather(sys_root, loops)
    tools = {t: probe.version(t) for t in ("lshw", "dmidecode", "lsblk", "lscpu", "smartctl")}
    return build(raw, tools=tools), raw


def summary(snap: Snapshot) -> str:
    """The readable summary a technician sees."""

    def gb(n: int) -> str:
        return f"{n / 1e9:,.0f} GB"

    lines = [
        f"{snap.manufacturer or '?'} {snap.model or '?'}  serial {snap.serial or '?'}",
        f"  chassis {snap.chassis_type or '?'} -> category {snap.category}",
        f"  CPU     {snap.cpu.model or '?'} ({snap.cpu.cores or '?'} cores, "
        f"{snap.cpu.threads or '?'} threads)",
        f"  RAM     {snap.ram_gb or '?'} GiB",
    ]
    for d in snap.drives:
        health = {True: "SMART passed", False: "SMART FAILED", None: "no SMART"}[d.smart_passed]
        extra = []
        if d.power_on_hours is not None:
            extra.append(f"{d.power_on_hours} h")
        if d.reallocated_sectors is not None:
            extra.append(f"{d.reallocated_sectors} reallocated")
        lines.append(
            f"  drive   {d.path} {d.kind} {d.transport or ''} {d.model or '?'} "
            f"serial {d.serial or '?'} {gb(d.size_bytes)}, {health}"
            + (f" ({', '.join(extra)})" if extra else "")
        )
    for b in snap.batteries:
        lines.append(
            f"  battery {b.name} {b.manufacturer or ''} {b.model or ''}: design "
            f"{b.design_capacity} {b.capacity_unit}, full {b.full_capacity} {b.capacity_unit}, "
            f"wear {b.wear_pct}%"
        )
    lines.extend(f"  network {n.name} {n.kind} {n.mac}" for n in snap.network)
    if snap.unread:
        lines.append("  could not read:")
        lines.extend(f"    {u.field}: {u.reason}" for u in snap.unread)
    return "\n".join(lines)
