from services.intake.settings import Settings
from shared.service import serve

serve("services.intake.main:app", Settings())
