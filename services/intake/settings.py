from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "intake"

    http_port: int = Field(8001, validation_alias=AliasChoices("GREENIT_INTAKE_HTTP_PORT"))
    custody_url: str = Field(
        "http://127.0.0.1:8006",
        validation_alias=AliasChoices("GREENIT_CUSTODY_PUBLIC_URL"),
        description="The custody service's public address: intake's old read paths (devices, "
        "certificates, /verify, reports, /ops) answer 308 to the same path there.",
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
