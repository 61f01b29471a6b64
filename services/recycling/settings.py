from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "recycling"

    http_port: int = Field(8004, validation_alias=AliasChoices("GREENIT_RECYCLING_HTTP_PORT"))
