from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "diagnostics"

    http_port: int = Field(8002, validation_alias=AliasChoices("GREENIT_DIAGNOSTICS_HTTP_PORT"))
