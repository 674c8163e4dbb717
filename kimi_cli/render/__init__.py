"""Renderers: turn events into terminal output (Rich panels, plain text, JSON, JSON lines)."""
