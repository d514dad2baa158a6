"""The Faust worker: the app wiring agents and pages, and what runs inside it."""
