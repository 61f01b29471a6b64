from services.recycling.settings import Settings
from shared.service import serve

serve("services.recycling.main:app", Settings())
