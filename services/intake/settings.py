from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "intake"

    http_port: int = Field(8001, validation_alias=AliasChoices("GREENIT_INTAKE_HTTP_PORT"))
