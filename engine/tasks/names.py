"""The PSD application's entry point by name: what a client kicks to start a workflow.

A client (``onemanage submit``, the console, your code) kicks ``psd.process`` by
name, so it loads neither the workflow's code nor the psd-tools it needs, and a
worker that only submits PSDs does not start running the PSD application.
"""

from __future__ import annotations

from engine.routing import LANE_LABEL, WORKFLOW_LANE

PROCESS_TASK = "psd.process"
PROCESS_LABELS = {LANE_LABEL: WORKFLOW_LANE}  # orchestrators have a lane of their own
