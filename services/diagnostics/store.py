from pymongo import ASCENDING

from shared.mongo import Database


async def setup(db: Database) -> None:
    await db.devices.create_index([("state", ASCENDING)])
