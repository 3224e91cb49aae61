"""Thin CLI shells (typer) over the core packages."""
