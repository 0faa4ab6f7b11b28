"""Workers for test_first_hour: importable by the launcher, as a user's module would be."""

import asyncio
import time


async def fetch():
    await asyncio.sleep(0.01)
    return "fetched"


def boom():
    raise ValueError("no data today")


def nap():
    time.sleep(0.3)
    return "rested"
