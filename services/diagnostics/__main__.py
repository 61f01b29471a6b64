from services.diagnostics.settings import Settings
from shared.service import serve

serve("services.diagnostics.main:app", Settings())
