"""Serving layer: the unified view (batch view for closed days, speed view for the rest) and its query tools."""
