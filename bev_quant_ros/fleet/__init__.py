"""Fleet scale: where independent tasks run (in-process, local worker processes, Ray; docs/fleet.md).

The jobs that use it live with their data: `evaluation.drive_tasks` (one task per drive) and
`quant.parallel_stats` (one task per calibration sequence); their results merge so the
numbers equal one process's.
"""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "InProcessRunner": "runners",
    "LocalPoolRunner": "runners",
    "RayRunner": "runners",
    "make_runner": "runners",
    "run_tasks": "runners",
})
