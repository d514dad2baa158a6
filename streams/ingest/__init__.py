"""Decode, validate, price and route trace events; map-side windows. Pure: no I/O."""
