"""Thin host adapters: the CLI, the Daydream Scope plugin, the TouchDesigner Script TOP."""
