// The status page: polls the worker's /api/* (same origin, the token cookie) and draws tables
// and uPlot charts. Text from the data goes into the page only through textContent, option
// labels, title attributes and uPlot's own legend (which sets textContent too), never through
// innerHTML: agent names, explanations and alert messages are written by whoever can produce
// to the topics.
"use strict";

const IN_ROLLOUT = new Set(["canary", "paused", "awaiting_approval", "gated"]);
const FAST_MS = 5000;
const SLOW_MS = 30000;
const ROLE_COLOR = { stable: "#1f6fd1", canary: "#f28c28", other: "#9a9a9a" };
const VERDICTS = new Set(["pass", "rollback", "alert", "continue", "inconclusive"]);
const SEVERITIES = new Set(["info", "warning", "critical"]);
const CHART_HEIGHT = 200;
const TOKEN_HELP =
  "The page was refused access: its token is missing or no longer valid (a restarted " +
  "worker issues a new one). Open the address the worker logged at start " +
  `(${window.location.origin}/?token=…).`;

const SERIES = [
  { key: "requests", title: "Requests per minute", format: (v) => v.toFixed(0) },
  { key: "error_rate", title: "Error rate", format: percent },
  { key: "latency_p95_ms", title: "p95 latency (ms)", format: (v) => v.toFixed(0) },
  { key: "cost_per_request_usd", title: "Cost per request (USD)", format: usd },
  { key: "quality_mean", title: "Quality (mean)", format: (v) => v.toFixed(3) },
];

const state = {
  agent: null, // the selected agent's name
  phase: null, // its phase at the last refresh: sets the refresh interval
  minutes: 15,
  now: NaN, // the worker's clock at the last refresh (Unix seconds): the charts' right edge
  rolloutId: null, // null: follow the agent's latest rollout
  charts: new Map(), // chart holder element -> { plot, signature }
  timer: 0,
  running: false,
  again: false,
};

class PageError extends Error {}

// --------------------------------------------------------------------------- formatting

function percent(v) {
  const p = v * 100;
  return `${p.toFixed(p !== 0 && Math.abs(p) < 10 ? 2 : 1)} %`;
}

// Three significant digits, in exponent form when far from 1 (e-values reach 1e5 and more).
function compact(v) {
  const far = Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3);
  return far ? v.toExponential(1) : String(Number(v.toPrecision(3)));
}

function usd(v) {
  return `$${v.toPrecision(3)}`;
}

function orDash(v, format) {
  return v === null || v === undefined ? "–" : format(v);
}

function weight(w) {
  return orDash(w, (v) => `${Number((v * 100).toFixed(1))} %`);
}

function utcTime(moment) {
  const d = new Date(moment); // an ISO string or milliseconds
  return Number.isNaN(d.getTime()) ? String(moment) : d.toISOString().slice(0, 19).replace("T", " ");
}

function nonNull(values) {
  return values.filter((v) => v !== null && v !== undefined).length;
}

// --------------------------------------------------------------------------- fetching

async function getJSON(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  let reply;
  try {
    reply = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    throw new PageError("The worker does not answer (is it running?). Retrying.");
  }
  if (reply.status === 401) throw new PageError(TOKEN_HELP);
  const body = await reply.json().catch(() => null);
  if (!reply.ok) {
    const why = body && typeof body.error === "string" ? `: ${body.error}` : "";
    throw new PageError(`${path} answered ${reply.status}${why}`);
  }
  if (body === null) throw new PageError(`${path} did not answer JSON`);
  return body;
}

// --------------------------------------------------------------------------- DOM helpers

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function badge(value, known, prefix) {
  const td = el("td");
  if (value === null || value === undefined) {
    td.textContent = "–";
    return td;
  }
  td.append(el("span", value, `badge ${prefix}-${known.has(value) ? value : "unknown"}`));
  return td;
}

function fillTable(id, rows, emptyText, columns) {
  const body = document.querySelector(`#${id} tbody`);
  const made = rows.map(row);
  if (made.length === 0) {
    const td = el("td", emptyText, "quiet");
    td.colSpan = columns;
    made.push(row([td]));
  }
  body.replaceChildren(...made);
}

function showError(message) {
  const banner = document.getElementById("error");
  banner.textContent = message;
  banner.hidden = false;
}

function hideError() {
  document.getElementById("error").hidden = true;
}

// --------------------------------------------------------------------------- charts

function chartWidth(holder) {
  return Math.max(280, Math.floor(holder.clientWidth || holder.parentElement.clientWidth));
}

// Charts are made once and then fed new data with setData, so a refresh does not flicker; a
// chart is remade only when its series change (another version, another metric kind).
function drawChart(holder, signature, makeOptions, data) {
  const known = state.charts.get(holder);
  if (known && known.signature === signature) {
    known.plot.setData(data);
    return;
  }
  if (known) known.plot.destroy();
  const plot = new uPlot(makeOptions(chartWidth(holder)), data, holder);
  state.charts.set(holder, { plot, signature });
}

function dropCharts(container) {
  for (const [holder, { plot }] of state.charts) {
    if (container.contains(holder)) {
      plot.destroy();
      state.charts.delete(holder);
    }
  }
}

function resizeCharts() {
  for (const [holder, { plot }] of state.charts) {
    plot.setSize({ width: chartWidth(holder), height: CHART_HEIGHT });
  }
}

// Time axis labels: hours and minutes, and seconds when the ticks are closer than a minute.
function clockLabels(u, splits, axisIdx, space, increment) {
  const chars = increment < 60 ? 8 : 5;
  return splits.map((ts) => new Date(ts * 1000).toISOString().slice(11, 11 + chars));
}

// The series charts span the chosen range, not only the minutes that have data.
function chosenRange(u, min, max) {
  return Number.isFinite(state.now) ? [state.now - state.minutes * 60, state.now] : [min, max];
}

// Reference lines (bounds, thresholds) are drawn without point markers.
const BARE = { points: { show: false } };

function line(label, stroke, format, extra) {
  return { label, stroke, width: 2, value: (u, v) => orDash(v, format), ...extra };
}

function baseOptions(width, series, format, extra) {
  return {
    width,
    height: CHART_HEIGHT,
    series: [{ label: "UTC", value: (u, ts) => orDash(ts, (t) => utcTime(t * 1000)) }, ...series],
    axes: [
      // Wide enough apart for "17:28:39": uPlot's default 50 px lets second labels touch.
      { values: clockLabels, space: 80 },
      { size: 70, values: (u, splits) => splits.map((v) => orDash(v, format)) },
    ],
    ...extra,
  };
}

// Figures made once per page: a caption and a holder uPlot draws into.
function figure(parent, title) {
  const fig = el("figure", null, "chart");
  const caption = el("figcaption", title);
  const holder = el("div", null, "plot");
  fig.append(caption, holder);
  parent.append(fig);
  return { fig, caption, holder };
}

function makeSeriesFigures() {
  const parent = document.getElementById("series");
  return SERIES.map((spec) => {
    const made = figure(parent, spec.title);
    made.fig.id = `series-${spec.key}`;
    made.fig.dataset.metric = spec.key;
    return { spec, ...made };
  });
}

function renderSeries(figures, series) {
  const versions = series.versions || [];
  document.getElementById("series").dataset.minutes = String(series.minutes);
  for (const { spec, fig, holder } of figures) {
    const data = [series.minute || [], ...versions.map((v) => v[spec.key] || [])];
    const counts = data.slice(1).map(nonNull);
    fig.dataset.series = versions.map((v) => v.version).join(",");
    fig.dataset.seriesPoints = counts.join(",");
    fig.dataset.points = String(counts.reduce((a, b) => a + b, 0));
    const lines = versions.map((v) =>
      line(`${v.version} (${v.role})`, ROLE_COLOR[v.role] || ROLE_COLOR.other, spec.format),
    );
    const signature = JSON.stringify(lines.map((l) => [l.label, l.stroke]));
    const options = (width) =>
      baseOptions(width, lines, spec.format, {
        scales: { x: { time: true, range: chosenRange } },
        cursor: { sync: { key: "series" } },
      });
    drawChart(holder, signature, options, data);
  }
}

// --------------------------------------------------------------------------- evidence

function effectFormat(kind) {
  return kind === "rate" ? (v) => `×${compact(v)}` : compact;
}

// A log scale cannot place 0 (or a missing e-value): such points are gaps.
function positiveOrNull(values) {
  return values.map((v) => (typeof v === "number" && v > 0 ? v : null));
}

// With no point at all (no judgement yet, every bound null) uPlot has no range to draw in,
// and with only the flat no-effect line a range of zero height.
function fallbackRange(low, high) {
  return (u, min, max) =>
    min === null || max === null
      ? [low, high]
      : min === max
        ? [min - 1, max + 1]
        : uPlot.rangeNum(min, max, 0.1, true);
}

function logRange(u, min, max) {
  if (min === null || max === null) return [0.1, 100];
  return uPlot.rangeLog(Math.min(min, 0.1), Math.max(max, 10), 10, true);
}

function effectChart(holder, metric) {
  const t = metric.t || [];
  const format = effectFormat(metric.kind);
  const data = [
    t,
    metric.effect || [],
    metric.cs_lower || [],
    metric.cs_upper || [],
    metric.pass_bound || [],
    t.map(() => metric.no_effect),
  ];
  const what = metric.kind === "rate" ? "canary / stable" : "canary − stable";
  const lines = [
    line(`effect (${what})`, "#333", format),
    line("cs lower", "#7aa6e0", format, { ...BARE, width: 1 }),
    line("cs upper", "#7aa6e0", format, { ...BARE, width: 1 }),
    line("pass bound", "#2a9d4b", format, { ...BARE, dash: [6, 4] }),
    line("no effect", "#888", format, { ...BARE, width: 1 }),
  ];
  const noEffect = metric.no_effect ?? 0;
  const options = (width) =>
    baseOptions(width, lines, format, {
      bands: [{ series: [3, 2], fill: "rgba(31, 111, 209, 0.15)" }],
      scales: { y: { range: fallbackRange(noEffect - 1, noEffect + 1) } },
      cursor: { sync: { key: "evidence" } },
    });
  drawChart(holder, `effect:${metric.kind}`, options, data);
  return { points: nonNull(data[1]), band: Math.min(nonNull(data[2]), nonNull(data[3])) };
}

function eValueChart(holder, metric) {
  const data = [metric.t || [], positiveOrNull(metric.e_value || []), metric.threshold || []];
  const lines = [
    line("e-value", "#6a3d9a", compact),
    line("rollback threshold", "#d62728", compact, { ...BARE, dash: [6, 4] }),
  ];
  const options = (width) =>
    baseOptions(width, lines, compact, {
      scales: { y: { distr: 3, log: 10, range: logRange } },
      cursor: { sync: { key: "evidence" } },
    });
  drawChart(holder, "e-value", options, data);
  return nonNull(data[1]);
}

function metricRow(container, metric) {
  const id = `evidence-${metric.metric}`;
  const existing = Array.from(container.children).find((child) => child.dataset.metric === id);
  if (existing) return existing;
  const section = el("div", null, "metric");
  section.dataset.metric = id;
  const heading = el("h3");
  const pair = el("div", null, "pair");
  const effect = figure(pair, "effect and its confidence sequence");
  const evalue = figure(pair, "e-value (log scale)");
  effect.fig.classList.add("effect");
  evalue.fig.classList.add("e-value");
  const caption = el("p", null, "explanation");
  section.append(heading, pair, caption);
  container.append(section);
  return section;
}

function renderEvidence(evidence) {
  const container = document.getElementById("evidence");
  const metrics = evidence.metrics || [];
  const wanted = new Set(metrics.map((m) => `evidence-${m.metric}`));
  for (const child of Array.from(container.children)) {
    if (!wanted.has(child.dataset.metric)) {
      dropCharts(child);
      child.remove();
    }
  }
  for (const metric of [...metrics].sort(bySeverity)) {
    const section = metricRow(container, metric);
    container.append(section); // the most severe metric first, its charts kept
    const heading = section.querySelector("h3");
    const latest = lastOf(metric.verdict);
    heading.replaceChildren(
      el("span", metric.label || metric.metric),
      el("span", metric.metric, "quiet"),
      el("span", latest ?? "–", `badge verdict-${VERDICTS.has(latest) ? latest : "unknown"}`),
    );
    const [effectFig, evalueFig] = section.querySelectorAll("figure");
    const drawn = effectChart(effectFig.querySelector(".plot"), metric);
    effectFig.dataset.points = String(drawn.points);
    effectFig.dataset.bandPoints = String(drawn.band);
    evalueFig.dataset.points = String(eValueChart(evalueFig.querySelector(".plot"), metric));
    section.querySelector(".explanation").textContent = metric.explanation || "";
  }
  if (metrics.length === 0) {
    container.replaceChildren(el("p", "No judgement of this rollout yet.", "quiet"));
  } else {
    for (const stray of container.querySelectorAll(":scope > p")) stray.remove();
  }
  renderVerdicts(evidence);
}

// Why a rollout stands where it does: the metrics that decided it come first.
const SEVERITY = ["rollback", "alert", "inconclusive", "continue", "pass"];

function lastOf(values) {
  return values && values.length ? values[values.length - 1] : null;
}

function bySeverity(a, b) {
  const rank = (m) => {
    const i = SEVERITY.indexOf(lastOf(m.verdict));
    return i < 0 ? SEVERITY.length : i;
  };
  return rank(a) - rank(b);
}

function byTime(a, b) {
  return Date.parse(a.time) - Date.parse(b.time);
}

function renderVerdicts(evidence) {
  const verdicts = (evidence.verdicts || []).slice().sort(byTime);
  const strip = document.getElementById("verdict-strip");
  strip.replaceChildren(
    ...verdicts.map((v) => {
      const cell = el("span", null, `cell verdict-${VERDICTS.has(v.verdict) ? v.verdict : "unknown"}`);
      cell.title = `${utcTime(v.time)} ${v.verdict}: ${v.explanation}`;
      return cell;
    }),
  );
  strip.dataset.points = String(verdicts.length);
  document.getElementById("verdict-sentence").textContent = verdictSentence(evidence, verdicts);
}

function verdictSentence(evidence, verdicts) {
  if (!evidence.rollout_id) return "This agent has no rollout yet.";
  const versions = `${evidence.canary_version} against ${evidence.stable_version}`;
  const latest = verdicts[verdicts.length - 1];
  if (!latest) return `No judgement of ${versions} yet: the judge waits for traffic on both.`;
  const when = utcTime(latest.time);
  return `The judge's latest verdict on ${versions} is ${latest.verdict.toUpperCase()} ` +
    `(${when} UTC, ${latest.windows_compared} windows compared): ${latest.explanation}`;
}

// --------------------------------------------------------------------------- agents

function phaseOf(agent) {
  return agent ? agent.phase : null;
}

function renderAgents(agents) {
  document.getElementById("no-agents").hidden = agents.length > 0;
  const rows = agents.map((a) => {
    const tr = row([
      a.agent,
      orDash(a.phase, String),
      orDash(a.stable_version, String),
      orDash(a.canary_version, String),
      a.canary_version ? weight(a.canary_weight) : "–",
      a.step_index === null || a.steps === null ? "–" : `${a.step_index + 1}/${a.steps}`,
      badge(a.verdict, VERDICTS, "verdict"),
    ]);
    tr.dataset.agent = a.agent;
    tr.tabIndex = 0;
    tr.classList.toggle("selected", a.agent === state.agent);
    tr.setAttribute("aria-selected", a.agent === state.agent ? "true" : "false");
    return tr;
  });
  document.querySelector("#agents tbody").replaceChildren(...rows);
}

function agentFromHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  return params.get("agent");
}

function pickAgent(agents) {
  const named = agentFromHash();
  if (named) return named;
  const withCanary = agents.find((a) => a.canary_version);
  return withCanary ? withCanary.agent : agents.length ? agents[0].agent : null;
}

function select(agent) {
  if (agent === state.agent) return;
  // Only the hash changes here; the hashchange listener refreshes.
  window.location.hash = new URLSearchParams({ agent }).toString();
}

function renderAgentHeader(agent, entry) {
  document.getElementById("agent-title").textContent = agent;
  const summary = document.getElementById("agent-summary");
  if (!entry || !entry.phase) {
    summary.textContent = entry ? "Traffic only: no deployment record." : "Not in the list.";
    return;
  }
  const canary = entry.canary_version
    ? `, canary ${entry.canary_version} at ${weight(entry.canary_weight)}`
    : "";
  summary.textContent = `Phase ${entry.phase}: stable ${orDash(entry.stable_version, String)}` +
    `${canary} (generation ${entry.generation}).`;
}

// --------------------------------------------------------------------------- rollouts, tables

function renderRollouts(rollouts, shownId) {
  const picker = document.getElementById("rollout");
  const signature = JSON.stringify(rollouts.map((r) => [r.rollout_id, r.phase]));
  // Rebuilt only when the list changes, so an open drop-down is not closed by a refresh.
  if (picker.dataset.signature !== signature) {
    picker.replaceChildren(
      ...rollouts.map((r, i) => {
        const cause = r.cause ? ` (${r.cause})` : "";
        const label = `${r.canary_version} vs ${r.stable_version}, ` +
          `${utcTime(r.started_at)} UTC: ${r.phase}${cause}${i === 0 ? " (latest)" : ""}`;
        const option = el("option", label);
        option.value = r.rollout_id;
        return option;
      }),
    );
    picker.dataset.signature = signature;
  }
  picker.disabled = rollouts.length === 0;
  if (shownId) picker.value = shownId;
}

function renderTimeline(rows) {
  const cells = rows.map((r) => [
    utcTime(r.time),
    r.source,
    r.event,
    orDash(r.version, String),
    weight(r.canary_weight),
    orDash(r.detail, String),
  ]);
  fillTable("timeline", cells, "No deployment event for this rollout.", 6);
}

function renderAlerts(alerts) {
  const cells = alerts.map((a) => [
    utcTime(a.time),
    badge(a.severity, SEVERITIES, "severity"),
    a.kind,
    orDash(a.version, String),
    orDash(a.metric, String),
    a.message,
  ]);
  fillTable("alerts", cells, "No alert.", 6);
}

// --------------------------------------------------------------------------- refreshing

async function refreshAgent(agent, entry, figures) {
  const latestOnly = { agent };
  const chosen = state.rolloutId ? { agent, rollout_id: state.rolloutId } : latestOnly;
  const [series, rollouts, evidence, alerts] = await Promise.all([
    getJSON("/api/series", { agent, minutes: state.minutes }),
    getJSON("/api/rollouts", latestOnly),
    getJSON("/api/evidence", chosen),
    getJSON("/api/alerts", { agent, limit: 20 }),
  ]);
  const timeline = evidence.rollout_id
    ? await getJSON("/api/timeline", { agent, rollout_id: evidence.rollout_id })
    : { rows: [] };
  if (agent !== state.agent) return; // another agent was picked meanwhile
  renderAgentHeader(agent, entry);
  renderSeries(figures, series);
  renderRollouts(rollouts.rollouts || [], evidence.rollout_id);
  renderEvidence(evidence);
  renderTimeline(timeline.rows || []);
  renderAlerts(alerts.alerts || []);
}

async function refresh(figures) {
  const listing = await getJSON("/api/agents");
  const agents = listing.agents || [];
  state.now = Date.parse(listing.now) / 1000;
  const agent = pickAgent(agents);
  if (agent !== state.agent) state.rolloutId = null;
  state.agent = agent;
  const entry = agents.find((a) => a.agent === agent);
  state.phase = phaseOf(entry);
  renderAgents(agents);
  document.getElementById("agent").hidden = agent === null;
  if (agent !== null) await refreshAgent(agent, entry, figures);
  const every = interval() / 1000;
  document.getElementById("refreshed").textContent =
    `refreshed ${utcTime(new Date().toISOString())} UTC, every ${every} s`;
}

function interval() {
  return IN_ROLLOUT.has(state.phase) ? FAST_MS : SLOW_MS;
}

// One refresh at a time: a request while one runs is served right after it.
function refreshSoon(figures) {
  if (state.running) {
    state.again = true;
    return;
  }
  clearTimeout(state.timer);
  state.running = true;
  refresh(figures)
    .then(() => {
      hideError();
      document.body.dataset.ready = "1";
    })
    .catch((err) => {
      showError(err instanceof PageError ? err.message : `The page failed: ${err}`);
      if (!(err instanceof PageError)) console.error(err);
    })
    .finally(() => {
      state.running = false;
      if (state.again) {
        state.again = false;
        refreshSoon(figures);
      } else {
        state.timer = setTimeout(() => refreshSoon(figures), interval());
      }
    });
}

function start() {
  const figures = makeSeriesFigures();
  const refreshNow = () => refreshSoon(figures);
  const agents = document.querySelector("#agents tbody");
  const pick = (event) => {
    const tr = event.target.closest("tr[data-agent]");
    if (tr) select(tr.dataset.agent);
  };
  agents.addEventListener("click", pick);
  agents.addEventListener("keydown", (event) => {
    if (event.key === "Enter") pick(event);
  });
  document.getElementById("range").addEventListener("change", (event) => {
    state.minutes = Number(event.target.value);
    refreshNow();
  });
  document.getElementById("rollout").addEventListener("change", (event) => {
    const picker = event.target;
    // The first entry is the latest rollout: choosing it follows whatever comes next.
    state.rolloutId = picker.selectedIndex <= 0 ? null : picker.value;
    refreshNow();
  });
  window.addEventListener("hashchange", refreshNow);
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(resizeCharts, 150);
  });
  refreshNow();
}

document.addEventListener("DOMContentLoaded", start);
