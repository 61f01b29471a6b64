from services.custody.settings import Settings
from shared.service import serve

serve("services.custody.main:app", Settings())
