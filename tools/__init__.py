"""Developer tools (test-video generation)."""
