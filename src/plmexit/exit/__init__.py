"""Per-sequence early exit: gates, a controller, calibration to a risk budget, and an adaptive forward."""
