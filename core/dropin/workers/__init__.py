"""`dropin serve --workers N`: N full server processes on the same ports, and their supervisor.

- supervisor.py: the supervisor process (ports held, workers started, restarted and stopped, what
  must reach every worker sent to all of them in one order);
- link.py: the control channel between the supervisor and a worker, and the worker's end of it;
- relay.py: what a worker's server relays through it (reloads, and metrics for a scrape);
- metrics_merge.py: a worker's counters as a snapshot, and the sum of several.

A worker is an ordinary `Server` (server.py) given a `WorkerLink`.
"""

from .supervisor import serve_workers

__all__ = ["serve_workers"]
