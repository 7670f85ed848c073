"""The trajectory data plane: canonical format, importers, rendering with the loss mask, packing."""
