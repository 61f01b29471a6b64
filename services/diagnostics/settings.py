from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field, field_validator

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "diagnostics"

    http_port: int = Field(8002, validation_alias=AliasChoices("GREENIT_DIAGNOSTICS_HTTP_PORT"))
    rules_file: Path | None = Field(
        None,
        validation_alias=AliasChoices("GREENIT_DIAGNOSTICS_RULES_FILE"),
        description="JSON file of GradingRules; the defaults apply without it.",
    )

    @field_validator("rules_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
