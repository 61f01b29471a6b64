from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "custody"

    http_port: int = Field(8006, validation_alias=AliasChoices("GREENIT_CUSTODY_HTTP_PORT"))
    public_url: str = Field(
        "http://127.0.0.1:8006",
        # GREENIT_INTAKE_PUBLIC_URL: its name before custody had its own service (deprecated,
        # read for one release; GREENIT_CUSTODY_PUBLIC_URL wins when both are set)
        validation_alias=AliasChoices("GREENIT_CUSTODY_PUBLIC_URL", "GREENIT_INTAKE_PUBLIC_URL"),
        description="Where the public verification pages are reached; printed in QR codes.",
    )
    impact_factors: Path | None = Field(
        None,
        validation_alias=AliasChoices(
            "GREENIT_CUSTODY_IMPACT_FACTORS", "GREENIT_INTAKE_IMPACT_FACTORS"
        ),
        description="A YAML file of CO2e and landfill factors; the built-in set when unset.",
    )
