"""Fixtures shared by the browser tests."""

import pytest


@pytest.fixture
def server(tmp_path, fake_classifier):
    """The URL of an app with the fake classifier, served in a thread on 127.0.0.1."""
    from tests.browser.test_browser import serve_in_thread

    yield from serve_in_thread(tmp_path, fake_classifier)
