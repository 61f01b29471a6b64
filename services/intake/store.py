from pymongo import ASCENDING

from shared.mongo import Database


async def setup(db: Database) -> None:
    await db.devices.create_index([("asset_tag", ASCENDING)], unique=True)
    await db.pickups.create_index([("partner_id", ASCENDING)])
