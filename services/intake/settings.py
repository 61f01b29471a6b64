from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "intake"

    http_port: int = Field(8001, validation_alias=AliasChoices("GREENIT_INTAKE_HTTP_PORT"))
    public_url: str = Field(
        "http://127.0.0.1:8001",
        validation_alias=AliasChoices("GREENIT_INTAKE_PUBLIC_URL"),
        description="Where the public verification pages are reached; printed in QR codes.",
    )
    impact_factors: Path | None = Field(
        None,
        validation_alias=AliasChoices("GREENIT_INTAKE_IMPACT_FACTORS"),
        description="A YAML file of CO2e and landfill factors; the built-in set when unset.",
    )
    manifest_max_rows: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("GREENIT_INTAKE_MANIFEST_MAX_ROWS"),
        description="Rows one pickup's asset list may hold; an import past it is refused whole "
        "(413) with the limit.",
    )
    max_manifest_body_bytes: int = Field(
        default=4_194_304,
        ge=1,
        description="Largest body of an asset-list (CSV) import, POST /pickups/{id}/manifest "
        "(4 MiB: 1,000 rows of long cells); other bodies keep GREENIT_MAX_BODY_BYTES.",
    )
