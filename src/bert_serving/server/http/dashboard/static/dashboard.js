/*
 * The bert-serving dashboard: polls `dashboard/data` (the server's Stats counters), derives rates
 * from successive samples (like Prometheus' rate() from two scrapes) and draws them with uPlot.
 *
 * Query parameters: `?refresh=SECONDS` (default 2). API key: asked for on a 401 and kept in
 * sessionStorage (this tab only), or given as `#key=KEY` (a fragment never reaches the server).
 * `window.bertServingDashboard` holds the charts and the last sample, for debugging and tests.
 */
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.max(250, 1000 * (Number(params.get("refresh")) || 2));
  const WINDOW = 150; // points kept per chart: 5 minutes at the default refresh
  const KEY_STORE = "bert-serving-api-key";
  const PHASES = ["tokenize", "queue", "inference", "total"];
  const PHASE_COLORS = { tokenize: "#805ad5", queue: "#dd6b20", inference: "#2b6cb0", total: "#1d2330" };
  const MAX_CLIENT_ROWS = 25;

  const $ = (id) => document.getElementById(id);
  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const formatRate = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) : decimal.format(v));
  const sum = (object) => Object.values(object).reduce((a, b) => a + b, 0);

  // ---- the API key ------------------------------------------------------------------------------

  function takeKeyFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.has("key")) {
      sessionStorage.setItem(KEY_STORE, fragment.get("key"));
      history.replaceState(null, "", location.pathname + location.search); // out of sight and history
    }
  }

  function askForKey() {
    const rejected = sessionStorage.getItem(KEY_STORE) !== null;
    sessionStorage.removeItem(KEY_STORE);
    $("key-message").textContent = rejected
      ? "The server refused that API key; enter the right one."
      : "This server wants its API key.";
    $("key-form").hidden = false;
    $("status").textContent = "key needed";
    $("status").className = "pill starting";
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    $("key-form").hidden = true;
    poll();
  });

  // ---- charts -----------------------------------------------------------------------------------

  function chart(id, series, extra = {}) {
    const element = $(id);
    const options = {
      width: element.clientWidth,
      height: 220,
      scales: { x: { time: true }, ...(extra.scales || {}) },
      axes: extra.axes || [{}, { size: 60 }],
      series: [{}, ...series.map((s) => ({ width: 2, ...s }))],
      legend: { live: false },
    };
    const plot = new uPlot(options, [[], ...series.map(() => [])], element);
    new ResizeObserver(() => plot.setSize({ width: element.clientWidth, height: 220 })).observe(element);
    return plot;
  }

  const charts = {
    throughput: chart("chart-throughput", [
      { label: "requests/s", stroke: "#2b6cb0" },
      { label: "sentences/s", stroke: "#38a169" },
      { label: "errors/s", stroke: "#c53030" },
    ]),
    latency: chart("chart-latency", PHASES.flatMap((phase) => [
      { label: `${phase} p50`, stroke: PHASE_COLORS[phase] },
      { label: `${phase} p99`, stroke: PHASE_COLORS[phase], dash: [6, 4], width: 1.5 },
    ])),
    batches: chart("chart-batches", [
      { label: "texts", stroke: "#2b6cb0", scale: "texts" },
      { label: "tokens", stroke: "#dd6b20", scale: "tokens" },
    ], {
      axes: [{},
        { scale: "texts", label: "texts", stroke: "#2b6cb0", size: 50 },
        { scale: "tokens", label: "tokens", stroke: "#dd6b20", side: 1, size: 60, grid: { show: false } }],
    }),
    queue: chart("chart-queue", [{ label: "texts waiting", stroke: "#805ad5", fill: "rgba(128, 90, 213, 0.12)" }]),
  };

  function append(plot, time, values) {
    const data = plot.data.map((column) => column.slice(-(WINDOW - 1)));
    data[0].push(time);
    values.forEach((value, i) => data[i + 1].push(value));
    plot.setData(data);
  }

  function clearCharts() {
    Object.values(charts).forEach((plot) => plot.setData(plot.data.map(() => [])));
  }

  // ---- from two samples to rates ----------------------------------------------------------------

  const totals = (s) => ({
    requests: sum(s.requests),
    sentences: s.sentences,
    errors: sum(s.errors),
    batches: s.batch_size.count,
  });

  function rates(previous, current) {
    const dt = current.time - previous.time;
    const [a, b] = [totals(previous), totals(current)];
    if (!(dt > 0) || b.requests < a.requests || b.batches < a.batches) return null; // a restarted server
    const mean = (key) => {
      const n = current[key].count - previous[key].count;
      return n > 0 ? (current[key].sum - previous[key].sum) / n : null;
    };
    return {
      requests: (b.requests - a.requests) / dt,
      sentences: (b.sentences - a.sentences) / dt,
      errors: (b.errors - a.errors) / dt,
      batchSize: mean("batch_size"),
      batchTokens: mean("batch_tokens"),
    };
  }

  // ---- the page ---------------------------------------------------------------------------------

  function formatDuration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function cell(content) {
    const td = document.createElement("td");
    const { text, className } = typeof content === "object" && content !== null ? content : { text: content };
    if (className) td.className = className;
    if (className && className.startsWith("pill")) {
      const pill = document.createElement("span");
      pill.className = className;
      pill.textContent = text;
      td.className = "";
      td.append(pill);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function fillTable(id, rows, empty) {
    const body = $(id).querySelector("tbody");
    const shown = rows.length ? rows : [[empty]];
    body.replaceChildren(...shown.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells.map(cell));
      return tr;
    }));
  }

  const number = (v) => ({ text: v == null ? "–" : decimal.format(v), className: "number" });

  function showModel(model) {
    $("model-name").textContent = model.name;
    document.title = `bert-serving: ${model.name}`;
    fillTable("model", [
      ["model", model.name],
      ["task", model.task],
      ...(model.task === "embed" ? [] : [["labels", model.labels.join(", ")], ["scores", model.activation]]),
      ["format", model.format],
      ["pooling", model.pooling],
      ["layers", model.layers.join(", ")],
      ["max_seq_len", model.max_seq_len == null ? "dynamic" : String(model.max_seq_len)],
      ["output dimensions", String(model.dim)],
      ["normalized", model.normalize ? "yes" : "no"],
      ["dtype", model.dtype],
      ["device", [...new Set(model.devices)].join(", ")],
      ["workers", String(model.workers)],
      ["max batch size", String(model.max_batch_size)],
      ["API key", model.api_key_required ? "required" : "not set"],
    ]);
  }

  function showTiles(s, r) {
    $("uptime").textContent = formatDuration(s.uptime_seconds);
    $("requests-total").textContent = integer.format(sum(s.requests));
    $("requests-split").textContent =
      `ZeroMQ ${integer.format(s.requests.zmq || 0)} · HTTP ${integer.format(s.requests.http || 0)}`;
    $("sentences-total").textContent = integer.format(s.sentences);
    $("tokens-total").textContent = `${integer.format(s.tokens)} tokens`;
    $("requests-rate").textContent = formatRate(r && r.requests);
    $("sentences-rate").textContent = `${formatRate(r && r.sentences)} sentences/s`;
    $("failed-total").textContent = integer.format(sum(s.errors));
    $("completed-total").textContent = `${integer.format(s.completed_requests)} completed`;
    $("predictions-total").textContent = integer.format(s.predictions);
    $("reranked-total").textContent = `${integer.format(s.reranked_pairs)} pairs reranked`;
    $("queue-depth").textContent = integer.format(s.queue_depth);
    $("forward-passes").textContent = integer.format(s.forward_passes);
    $("batch-mean").textContent = s.batch_size.count
      ? `${decimal.format(s.batch_size.sum / s.batch_size.count)} texts each on average` : "";
    $("active-clients").textContent = integer.format(s.active_clients);
  }

  function showTables(s) {
    fillTable("models", (s.models || []).map((m) => [
      m.name, m.task, integer.format(m.completed_requests), integer.format(m.failed_requests),
      integer.format(m.forward_passes), integer.format(m.queue_depth), number(m.p50_ms), m.workers,
    ]), "one model");
    const workers = Object.entries(s.readiness.workers);
    fillTable("workers", workers.map(([index, state]) => [
      `#${index}`, s.model.devices[index] || "", { text: state, className: `pill ${state}` },
    ]), "no workers yet");
    fillTable("latency", PHASES.map((phase) => {
      const l = s.latency_ms[phase];
      return [phase, number(l.p50), number(l.p99), number(l.count)];
    }), "");
    fillTable("errors", Object.entries(s.errors).sort((a, b) => b[1] - a[1])
      .map(([kind, count]) => [kind, number(count)]), "none");
    const clients = s.clients.slice(0, MAX_CLIENT_ROWS).map((c) => [
      { text: c.client, className: "client" },
      c.channel === "zmq" ? "ZeroMQ" : c.channel.toUpperCase(),
      number(c.requests), number(c.texts), formatDuration(c.idle_seconds),
    ]);
    if (s.clients.length > MAX_CLIENT_ROWS) {
      clients.push([`… and ${s.clients.length - MAX_CLIENT_ROWS} more`, "", "", "", ""]);
    }
    fillTable("clients", clients, "no clients yet");
  }

  function showCharts(s, r) {
    append(charts.throughput, s.time, r ? [r.requests, r.sentences, r.errors] : [null, null, null]);
    append(charts.latency, s.time, PHASES.flatMap((p) => [s.latency_ms[p].p50, s.latency_ms[p].p99]));
    append(charts.batches, s.time, r ? [r.batchSize, r.batchTokens] : [null, null]);
    append(charts.queue, s.time, [s.queue_depth]);
  }

  let previous = null;

  function show(sample) {
    const r = previous && rates(previous, sample);
    if (previous && !r) clearCharts(); // the counters went back: the server was restarted
    showModel(sample.model);
    showTiles(sample, r);
    showTables(sample);
    showCharts(sample, r);
    $("status").textContent = sample.readiness.status;
    $("status").className = `pill ${sample.readiness.status}`;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
    previous = sample;
    window.bertServingDashboard.last = sample;
  }

  // ---- polling ----------------------------------------------------------------------------------

  let timer = null;

  async function poll() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY_STORE);
    try {
      const response = await fetch("dashboard/data", {
        cache: "no-store",
        headers: key === null ? {} : { Authorization: `Bearer ${key}` },
      });
      if (response.status === 401) {
        askForKey();
        return; // until a key is entered
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      show(await response.json());
      $("problem").hidden = true;
    } catch (error) {
      $("problem").textContent = `Cannot read the server's numbers (${error.message}); trying again.`;
      $("problem").hidden = false;
      $("status").textContent = "unreachable";
      $("status").className = "pill unreachable";
    }
    timer = setTimeout(poll, REFRESH_MS);
  }

  window.bertServingDashboard = { charts, last: null };
  takeKeyFromFragment();
  poll();
})();
