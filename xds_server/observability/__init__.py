"""Metrics, events and operator log lines, fed by the parts' hooks (wiring level)."""
