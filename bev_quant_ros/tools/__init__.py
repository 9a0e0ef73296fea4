"""Subcommands of the `bev-quant` CLI that do not belong to one subsystem."""
