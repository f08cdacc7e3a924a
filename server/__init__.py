"""FaceDApps streaming server (aiohttp + aiortc)."""
