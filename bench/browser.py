"""Serving an app in a thread and finding Chromium: shared by the browser tests and the
screenshot tools (``tools/screenshot.py``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading

from aiohttp import web


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


CHROMIUM = _find_chromium()


class ServerThread:
    """An aiohttp app served on 127.0.0.1:<free port> by its own event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.port = 0
        self.leftover: list[str] = []
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._run, name="facedapps-test-server",
                                       daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            if self.runner is not None:
                self.loop.run_until_complete(self.runner.cleanup())
            self.leftover = self._finish_tasks()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def _finish_tasks(self) -> list[str]:
        """Cancel tasks still pending after the app's cleanup (as asyncio.run does); their names."""
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        return [repr(t.get_coro()) for t in pending]

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> str:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("test server did not start within 30 s")
        if self.error is not None:
            raise RuntimeError(f"test server failed to start: {self.error!r}") from self.error
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(20)
        assert not self.thread.is_alive(), "test server did not stop within 20 s"
        if self.leftover:
            print(f"\ntasks left after the app's cleanup: {self.leftover}")
