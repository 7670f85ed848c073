"""Only what setup.cfg cannot say: the Triton kernels live in `kernels/` (imports nothing of swehero) but are
imported as `swehero_kernels`, a name no other distribution uses (an unrelated PyPI package is called `kernels`,
and transformers probes for it)."""

from setuptools import find_namespace_packages, setup

setup(
    # namespace discovery: the data-only folders (agent/prompts, model/configs) are packages too, or setuptools
    # warns on every install that it may stop shipping them
    packages=find_namespace_packages(include=["swehero", "swehero.*"], exclude=["*.__pycache__"])
    + ["swehero_kernels"],
    package_dir={"swehero_kernels": "kernels"},
)
