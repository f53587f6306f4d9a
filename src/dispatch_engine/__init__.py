"""dispatch-engine: decides whether and when each survey invitation may go out."""

__version__ = "0.1.0"
