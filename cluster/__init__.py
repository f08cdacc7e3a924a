"""The shared inference tier on Ray Serve (``run.py cluster``, ``run.py serve --ray``).

``tier`` holds the settings and the control plane (connect, deploy, status, shutdown, handle);
``deployment`` is the Serve deployment that runs a ``core.runtimes`` classifier in each replica.
Ray is an optional extra (``pip install -e '.[cluster]'``): nothing here imports it at module
import time except ``deployment``, which only ``tier.deploy`` loads.
"""
