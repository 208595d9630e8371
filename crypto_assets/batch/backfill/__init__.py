"""Minute gaps in ``minute_raw``: the gap report and the exchange backfill that fills them."""
