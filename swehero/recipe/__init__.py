"""The recipe engine: load and validate a YAML recipe, then run its stages with manifests and resume."""
