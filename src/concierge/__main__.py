"""``python -m concierge``: the same command as ``concierge``."""

from concierge.cli import app

if __name__ == "__main__":
    app()
