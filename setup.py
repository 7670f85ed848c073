"""Only what setup.cfg cannot say: the Triton kernels live in `kernels/` (imports nothing of swehero) but are
imported as `swehero_kernels`, a name no other distribution uses (an unrelated PyPI package is called `kernels`,
and transformers probes for it)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["swehero", "swehero.*"]) + ["swehero_kernels"],
    package_dir={"swehero_kernels": "kernels"},
)
