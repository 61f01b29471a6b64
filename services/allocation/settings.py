from typing import ClassVar

from pydantic import AliasChoices, Field

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service: ClassVar[str] = "allocation"

    http_port: int = Field(8003, validation_alias=AliasChoices("GREENIT_ALLOCATION_HTTP_PORT"))
