from services.allocation.settings import Settings
from shared.service import serve

serve("services.allocation.main:app", Settings())
