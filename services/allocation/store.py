from pymongo import ASCENDING

from shared.mongo import Database


async def setup(db: Database) -> None:
    await db.stock.create_index([("state", ASCENDING), ("category", ASCENDING)])
