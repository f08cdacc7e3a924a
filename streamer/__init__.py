"""A headless streaming client: sends a video file or a local camera to a FaceDApps server and
prints the result messages (``python run.py stream``)."""
