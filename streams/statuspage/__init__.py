"""The status page: what a person watching a rollout reads at a glance, served by the worker
at ``http://127.0.0.1:6066/`` (the same web server as ``/sql`` and ``/health``).

Layout:

* :mod:`streams.statuspage.queries`: the SQL the page runs (request values are bound as
  ClickHouse parameters, never spliced into the text) and the pure functions that shape its
  rows into the JSON below.
* :mod:`streams.statuspage.requests`: what a request may ask (parameters checked, bounded).
* ``static/``: the page itself (``index.html``, ``page.js``, ``page.css``) and the chart
  library, uPlot, vendored from npm with its license (``static/vendor/uplot/``): the page
  works offline and loads nothing from elsewhere.
* :mod:`streams.runtime.statuspage`: the Faust adapter (routes, access token, the query
  thread).

Access. Every route asks for the worker's page token, as Jupyter does: the worker logs
``http://127.0.0.1:6066/?token=...``; opening it sets the token as an HttpOnly, SameSite=Strict
cookie and redirects to ``/``. Scripts and tools may send ``Authorization: Bearer <token>``
instead. Like ``/sql``, every request must name the worker's own address in ``Host``.

The JSON endpoints (GET only; times in rows are ISO 8601 UTC strings, chart axes are Unix
seconds; a number the data cannot give is ``null``):

``GET /api/agents``
    ``{"now": iso, "agents": [{"agent", "phase", "stable_version", "canary_version",
    "canary_weight", "step_index", "steps", "rollout_id", "generation", "updated_at",
    "verdict", "verdict_at"}]}``: one entry per agent with a deployment (its latest
    generation) or with traffic in the last 24 hours (then ``phase`` and the rest are
    ``null``); ``verdict``: the latest judgement of the current rollout, ``null`` without one.
    ``steps``: the number of steps of the rollout's plan; ``step_index`` counts from 0.

``GET /api/series?agent=A&minutes=60``
    Per minute over the last ``minutes`` (1..1440), from ``coalmine.version_stats_1m``:
    ``{"agent", "minutes", "stable_version", "canary_version", "minute": [unix s...],
    "versions": [{"version", "role": "stable"|"canary"|"other", "requests": [...],
    "error_rate": [...], "latency_p95_ms": [...], "cost_per_request_usd": [...],
    "quality_mean": [...]}]}``: every array of a version is aligned with ``minute`` (``null``
    where the version had no row that minute, or the figure has no denominator); figures are
    computed as ``coalmine.version_summary`` computes them.

``GET /api/rollouts?agent=A``
    ``{"agent", "rollouts": [{"rollout_id", "stable_version", "canary_version", "started_at",
    "updated_at", "phase", "cause"}]}``: the agent's last 20 rollouts, newest first;
    ``phase`` and ``cause`` are those of the rollout's latest deployment record.

``GET /api/evidence?agent=A[&rollout_id=R]``
    The judge's evidence for rollout ``R`` (default: the agent's latest rollout), from
    ``coalmine.judgements`` (at most the last 2,000 judgements):
    ``{"agent", "rollout_id", "stable_version", "canary_version",
    "verdicts": [{"time": iso, "generation", "verdict", "windows_compared", "explanation"}],
    "metrics": [{"metric", "label", "kind": "rate"|"mean", "no_effect": 1.0|0.0,
    "worse": "higher"|"lower", "t": [unix s...], "effect": [...], "cs_lower": [...],
    "cs_upper": [...], "pass_bound": [...], "e_value": [...], "threshold": [...],
    "verdict": [...], "explanation": str}]}``. ``effect`` and the confidence sequence
    ``cs_lower``..``cs_upper`` are the rate ratio canary / stable for rate metrics and the
    difference canary - stable for mean metrics; ``pass_bound`` is the tolerance the sequence
    must stay on the good side of for PASS (``cs_upper <= pass_bound`` when higher is worse,
    ``cs_lower >= pass_bound`` when lower is worse); ``threshold`` is the e-value at which the
    metric rolls back. ``label``: the metric in words (as alerts name it); ``explanation``:
    the metric's latest line. Empty lists when the rollout
    has no judgement yet; ``rollout_id`` ``null`` when the agent has no rollout.

``GET /api/timeline?agent=A&rollout_id=R``
    ``{"rows": [{"time": iso, "source", "event", "version", "canary_weight", "detail",
    "ref"}]}``: ``coalmine.deployment_timeline`` of the rollout (at most 500 rows).

``GET /api/alerts?agent=A&limit=20``
    ``{"alerts": [{"time": iso, "kind", "severity", "version", "metric", "rollout_id",
    "message"}]}``: the agent's latest alerts (``limit`` 1..200), newest first.

A request with a parameter missing or out of bounds gets 400 and ``{"error": "..."}``; an
unknown agent or rollout gets empty lists, not an error.
"""
