"""swehero: the SWE-Zero -> SWE-Hero recipe (arXiv 2604.01496) as a reproducible package."""

__version__ = "0.1.0"
