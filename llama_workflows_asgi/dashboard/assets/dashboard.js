// The runs dashboard. Plain ES module, no dependencies, nothing inline (it runs
// under `Content-Security-Policy: default-src 'self'`). Every request goes to
// the workflow API through URLs relative to the page, so any prefix works.

const POLL_MS = 1500;
const PAGE_SIZE = 20;
const STATUSES = ["running", "completed", "failed", "cancelled"];
const STATUS_ICONS = { running: "◔", completed: "✓", failed: "✕", cancelled: "⊘", waiting: "?" };
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const SVG_NS = "http://www.w3.org/2000/svg";

const main = document.getElementById("main");
const live = document.getElementById("live");
const toastBox = document.getElementById("toast");

// A view owns its timers and streams; leaving it calls every cleanup.
let cleanups = [];
let schemaCache = new Map();

// -- building the DOM ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function toast(message, kind = "info") {
  toastBox.textContent = message;
  toastBox.dataset.kind = kind;
  toastBox.classList.add("visible");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => toastBox.classList.remove("visible"), 4000);
}

function setLive(text, ok = true) {
  live.textContent = text;
  live.classList.toggle("offline", !ok);
}

// -- the API ----------------------------------------------------------------------------

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
    ...options,
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new ApiError(detail);
  }
  return body;
}

const enc = encodeURIComponent;

function handlersUrl({ status, workflow, cursor, handlerId, limit = PAGE_SIZE }) {
  const params = new URLSearchParams({ order: "desc", limit: String(limit) });
  if (status) params.append("status", status);
  if (workflow) params.append("workflow_name", workflow);
  if (handlerId) params.append("handler_id", handlerId);
  if (cursor) params.append("cursor", cursor);
  return `handlers?${params}`;
}

async function workflowNames() {
  return (await api("workflows")).workflows;
}

async function cached(key, load) {
  if (!schemaCache.has(key)) schemaCache.set(key, load().catch((e) => (schemaCache.delete(key), Promise.reject(e))));
  return schemaCache.get(key);
}

// -- formatting ---------------------------------------------------------------------------

function parseTime(value) {
  return value ? new Date(value) : null;
}

function formatTime(value) {
  const date = parseTime(value);
  if (!date) return "—";
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return sameDay ? time : `${date.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

function timeEl(value) {
  return value ? h("time", { datetime: value, title: new Date(value).toLocaleString() }, formatTime(value)) : "—";
}

function formatDuration(ms) {
  if (ms === null || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs.toFixed(1)} s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins}m ${Math.floor(secs % 60)}s`;
  return `${Math.floor(mins / 60)}h ${mins % 60}m`;
}

function runDuration(handler) {
  const start = parseTime(handler.started_at);
  if (!start) return null;
  const end = parseTime(handler.completed_at) || (TERMINAL.has(handler.status) ? parseTime(handler.updated_at) : new Date());
  return end - start;
}

function statusBadge(status, label = status) {
  return h(
    "span",
    { class: `status status-${status}` },
    h("span", { class: "status-icon", "aria-hidden": "true" }, STATUS_ICONS[status] || "•"),
    h("span", { class: "status-text" }, label),
  );
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// -- routing ------------------------------------------------------------------------------

function route() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // the skip link and other in-page anchors
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  let view;
  if (parts[0] === "runs" && parts[1]) view = runView(parts[1]);
  else if (parts[0] === "start") view = startView(parts[1] || "");
  else view = runsView();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = link.dataset.nav === (parts[0] === "start" ? "start" : "runs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren(view);
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      // A tab in the background asks nothing; it catches up when shown again.
      if (!document.hidden) await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  cleanups.push(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

function setTitle(text) {
  document.title = `${text} · Workflow runs`;
}

// -- the runs list ---------------------------------------------------------------------------

const listState = { status: "", workflow: "", cursors: [null] };

function runsView() {
  setTitle("Runs");
  const list = new RunsList();
  every(POLL_MS, () => list.refresh());
  return list.element;
}

// The runs table: the current filters and page, refreshed in place.
class RunsList {
  constructor() {
    this.nextCursor = null;
    this.rendered = "";
    this.generation = 0;
    this.tbody = h("tbody");
    this.empty = h("p", { class: "empty", hidden: true }, "No runs match these filters.");
    this.pageLabel = h("span", { class: "page-label", "aria-live": "polite" });
    this.newer = h("button", { type: "button", class: "btn", onclick: () => this.turnPage(-1) }, "← Newer");
    this.older = h("button", { type: "button", class: "btn", onclick: () => this.turnPage(1) }, "Older →");
    this.workflowSelect = h(
      "select",
      { id: "filter-workflow", onchange: (e) => this.setFilter("workflow", e.target.value) },
      h("option", { value: "" }, "All workflows"),
    );
    this.workflowList = h("ul", { class: "workflow-list", "aria-label": "Registered workflows" });
    this.element = this.layout();
    this.loadWorkflows();
  }

  layout() {
    const statusSelect = h(
      "select",
      { id: "filter-status", onchange: (e) => this.setFilter("status", e.target.value) },
      h("option", { value: "" }, "All statuses"),
      STATUSES.map((st) => h("option", { value: st, selected: listState.status === st }, st)),
    );
    const filters = h(
      "div",
      { class: "filters", role: "group", "aria-label": "Filters" },
      h("span", { class: "filter" }, h("label", { for: "filter-status" }, "Status"), statusSelect),
      h("span", { class: "filter" }, h("label", { for: "filter-workflow" }, "Workflow"), this.workflowSelect),
    );
    const columns = ["Status", "Run", "Workflow", "Started", "Updated", "Duration"];
    const table = h(
      "table",
      { class: "runs" },
      h("caption", { class: "visually-hidden" }, "Runs, newest first"),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      this.tbody,
    );
    return h(
      "div",
      { class: "layout" },
      h(
        "section",
        { class: "card runs-card", "aria-labelledby": "runs-title" },
        h("div", { class: "card-head" }, h("h1", { id: "runs-title" }, "Runs"), filters),
        h("div", { class: "table-wrap" }, table),
        this.empty,
        h("nav", { class: "pager", "aria-label": "Pages" }, this.newer, this.pageLabel, this.older),
      ),
      h(
        "aside",
        { class: "card side-card", "aria-labelledby": "workflows-title" },
        h("h2", { id: "workflows-title" }, "Workflows"),
        this.workflowList,
      ),
    );
  }

  async loadWorkflows() {
    try {
      const names = await workflowNames();
      this.workflowSelect.append(...names.map((n) => h("option", { value: n, selected: listState.workflow === n }, n)));
      this.workflowList.replaceChildren(...names.map(workflowItem));
    } catch (error) {
      toast(`Could not load workflows: ${error.message}`, "error");
    }
  }

  setFilter(key, value) {
    listState[key] = value;
    listState.cursors = [null];
    this.refresh();
  }

  turnPage(step) {
    if (step > 0 && this.nextCursor) listState.cursors.push(this.nextCursor);
    if (step < 0 && listState.cursors.length > 1) listState.cursors.pop();
    this.refresh();
  }

  async refresh() {
    const cursor = listState.cursors[listState.cursors.length - 1];
    const mine = ++this.generation; // a filter change and a poll may overlap: the last one wins
    try {
      const page = await api(handlersUrl({ status: listState.status, workflow: listState.workflow, cursor }));
      if (mine === this.generation) this.show(page);
      setLive(`Live · ${formatTime(new Date().toISOString())}`);
    } catch (error) {
      setLive(`Offline: ${error.message}`, false);
    }
  }

  show(page) {
    this.nextCursor = page.next_cursor || null;
    const signature = JSON.stringify([page.handlers, listState]);
    if (signature !== this.rendered) {
      this.rendered = signature;
      reconcileRows(this.tbody, page.handlers);
    }
    refreshDurations(this.tbody, page.handlers);
    this.empty.hidden = page.handlers.length > 0;
    this.newer.disabled = listState.cursors.length <= 1;
    this.older.disabled = !this.nextCursor;
    this.pageLabel.textContent = `Page ${listState.cursors.length}`;
  }
}

function workflowItem(name) {
  return h(
    "li",
    {},
    h("span", { class: "wf-name" }, name),
    h("a", { class: "btn btn-small", href: `#/start/${enc(name)}`, "aria-label": `Start ${name}` }, "Start"),
  );
}

function runRow(handler) {
  return h(
    "tr",
    { "data-handler-id": handler.handler_id, "data-status": handler.status },
    h("td", { "data-label": "Status" }, statusBadge(handler.status)),
    h("td", { "data-label": "Run" }, h("a", { class: "run-link mono", href: `#/runs/${enc(handler.handler_id)}` }, handler.handler_id)),
    h("td", { "data-label": "Workflow" }, handler.workflow_name),
    h("td", { "data-label": "Started" }, timeEl(handler.started_at)),
    h("td", { "data-label": "Updated" }, timeEl(handler.updated_at)),
    h("td", { "data-label": "Duration", class: "duration" }, formatDuration(runDuration(handler))),
  );
}

// Updates the table in place: unchanged rows stay (and keep focus), changed
// rows are swapped, new ones inserted, rows no longer listed removed.
function reconcileRows(tbody, handlers) {
  const existing = new Map([...tbody.rows].map((tr) => [tr.dataset.handlerId, tr]));
  let position = 0;
  for (const handler of handlers) {
    const json = JSON.stringify(handler);
    let tr = existing.get(handler.handler_id);
    existing.delete(handler.handler_id);
    if (!tr || tr.dataset.json !== json) {
      const fresh = runRow(handler);
      fresh.dataset.json = json;
      if (tr) {
        const hadFocus = tr.contains(document.activeElement);
        tr.replaceWith(fresh);
        if (hadFocus) fresh.querySelector("a").focus();
      }
      tr = fresh;
    }
    if (tbody.rows[position] !== tr) tbody.insertBefore(tr, tbody.rows[position] || null);
    position += 1;
  }
  for (const stale of existing.values()) stale.remove();
}

function refreshDurations(tbody, handlers) {
  handlers.forEach((handler, i) => {
    const cell = tbody.rows[i] && tbody.rows[i].querySelector(".duration");
    if (cell && handler.status === "running") cell.textContent = formatDuration(runDuration(handler));
  });
}

// -- schema-driven forms ---------------------------------------------------------------------

function fieldKind(schema) {
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return fieldKind({ ...real[0], title: schema.title, default: schema.default });
    return "json";
  }
  if (schema.enum) return "enum";
  if (["string", "integer", "number", "boolean"].includes(schema.type)) return schema.type;
  return "json";
}

function enumValues(schema) {
  const options = schema.anyOf || schema.oneOf;
  if (options) return options.find((o) => o.enum)?.enum || [];
  return schema.enum;
}

// Builds inputs for an object schema; returns the elements and a reader.
function schemaFields(schema, idPrefix) {
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const fields = Object.entries(properties).map(([name, prop]) => schemaField(name, prop, required.has(name), idPrefix));
  const read = () => {
    const value = {};
    for (const field of fields) {
      const v = field.read();
      if (v !== undefined) value[field.name] = v;
    }
    return value;
  };
  return { elements: fields.map((f) => f.element), read, count: fields.length };
}

function schemaField(name, prop, required, idPrefix) {
  const id = `${idPrefix}-field-${name}`;
  const kind = fieldKind(prop);
  const hintText = [kind === "json" ? "JSON" : kind, required ? "required" : "optional", prop.description].filter(Boolean).join(" · ");
  const common = { id, name, "aria-describedby": `${id}-hint`, required: required && kind !== "boolean" };
  let input;
  if (kind === "boolean") input = h("input", { ...common, type: "checkbox", checked: prop.default === true });
  else if (kind === "enum") input = h("select", common, enumValues(prop).map((v) => h("option", { value: JSON.stringify(v), selected: v === prop.default }, String(v))));
  else if (kind === "json") input = h("textarea", { ...common, rows: 3, class: "mono", spellcheck: "false" }, prop.default === undefined ? "" : JSON.stringify(prop.default));
  else {
    const numeric = kind === "integer" || kind === "number";
    input = h("input", { ...common, type: numeric ? "number" : "text", step: kind === "number" ? "any" : null, value: prop.default ?? null, autocomplete: "off" });
  }
  const element = h(
    "div",
    { class: `field field-${kind}` },
    h("label", { for: id }, name),
    input,
    h("span", { class: "hint", id: `${id}-hint` }, hintText),
  );
  return { name, element, read: () => readField(input, kind, required, name) };
}

function readField(input, kind, required, name) {
  if (kind === "boolean") return input.checked;
  if (kind === "enum") return JSON.parse(input.value);
  const raw = input.value.trim();
  if (raw === "") {
    if (required) throw new Error(`${name} is required`);
    return undefined;
  }
  if (kind === "integer" || kind === "number") return Number(raw);
  if (kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      throw new Error(`${name} must be valid JSON`);
    }
  }
  return input.value;
}

function formError() {
  return h("p", { class: "form-error", role: "alert" });
}

// -- starting a run ---------------------------------------------------------------------

function startView(selected) {
  setTitle("Start a run");
  const formSlot = h("div", { class: "start-form-slot" });
  let shown = null;
  const showForm = async (name) => {
    shown = name;
    try {
      const schema = await cached(`schema:${name}`, () => api(`workflows/${enc(name)}/schema`));
      if (shown === name) formSlot.replaceChildren(startForm(name, schema.start));
    } catch (error) {
      if (shown === name) formSlot.replaceChildren(h("p", { class: "form-error", role: "alert" }, error.message));
    }
  };
  // Changing workflow swaps the form in place: the select keeps its focus.
  const onchange = (e) => {
    history.replaceState(null, "", `#/start/${enc(e.target.value)}`);
    showForm(e.target.value);
  };
  const select = h("select", { id: "start-workflow", onchange });
  const card = h(
    "section",
    { class: "card narrow", "aria-labelledby": "start-title" },
    h("h1", { id: "start-title" }, "Start a run"),
    h("div", { class: "field" }, h("label", { for: "start-workflow" }, "Workflow"), select),
    formSlot,
  );
  workflowNames()
    .then((names) => {
      const name = names.includes(selected) ? selected : names[0];
      select.append(...names.map((n) => h("option", { value: n, selected: n === name }, n)));
      if (name) showForm(name);
      else formSlot.replaceChildren(h("p", { class: "empty" }, "No workflows are registered."));
    })
    .catch((error) => formSlot.replaceChildren(h("p", { class: "form-error", role: "alert" }, error.message)));
  return h("div", { class: "layout single" }, card);
}

function startForm(name, schema) {
  const fields = schemaFields(schema, "start");
  const extra = h("textarea", { id: "start-extra", rows: 3, class: "mono", spellcheck: "false", placeholder: '{"name": "Ada"}', "aria-describedby": "start-extra-hint" });
  const error = formError();
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Start run");
  const onsubmit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const value = { ...readExtra(extra), ...fields.read() };
      const handler = await api(`workflows/${enc(name)}/run-nowait`, {
        method: "POST",
        body: JSON.stringify({ start_event: { type: schema.title, value } }),
      });
      toast(`Started ${name} run ${handler.handler_id}`);
      location.hash = `#/runs/${enc(handler.handler_id)}`;
    } catch (e) {
      error.textContent = e.message;
      submit.disabled = false;
    }
  };
  return h(
    "form",
    { class: "schema-form", onsubmit, "aria-label": `Start ${name}` },
    schema.description ? h("p", { class: "muted" }, schema.description) : null,
    fields.count ? fields.elements : h("p", { class: "muted" }, `${schema.title} declares no fields.`),
    h(
      "div",
      { class: "field" },
      h("label", { for: "start-extra" }, "Additional fields"),
      extra,
      h("span", { class: "hint", id: "start-extra-hint" }, "JSON object · optional · extra attributes of the start event"),
    ),
    error,
    h("div", { class: "actions" }, submit),
  );
}

function readExtra(textarea) {
  const raw = textarea.value.trim();
  if (!raw) return {};
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Error("Additional fields must be valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("Additional fields must be a JSON object");
  return value;
}

// -- one run ----------------------------------------------------------------------------------

function runView(handlerId) {
  setTitle(`Run ${handlerId}`);
  const page = new RunPage(handlerId);
  every(POLL_MS, () => page.loadHandler());
  cleanups.push(() => page.close());
  return page.element;
}

// One run's page: its handler polled, its events streamed, its graph drawn.
class RunPage {
  constructor(handlerId) {
    this.handlerId = handlerId;
    this.handler = null;
    this.handlerJson = "";
    this.events = [];
    this.sequences = new Set();
    this.stepsRan = new Set();
    this.eventsSeen = new Set();
    this.showInternal = false;
    this.inputsFor = null;
    this.graph = null;
    this.source = null;
    this.fetches = 0; // handler reads so far
    this.finalAt = 0; // the first read that follows a final event (0: none)
    this.el = {
      header: h("div", { class: "run-head" }),
      meta: h("dl", { class: "meta" }),
      actions: h("div", { class: "actions run-actions" }),
      outcome: h("section", { class: "card outcome", "aria-labelledby": "outcome-title", hidden: true }),
      inputs: h("section", { class: "card inputs", "aria-labelledby": "inputs-title", hidden: true }),
      graph: h("div", { class: "graph", id: "graph" }),
      timeline: h("ol", { class: "timeline", "aria-label": "Events, oldest first" }),
      timelineEmpty: h("p", { class: "empty" }, "No events yet."),
    };
    this.element = this.layout();
  }

  layout() {
    const el = this.el;
    const toggle = h("input", { type: "checkbox", id: "show-internal", onchange: (e) => this.setShowInternal(e.target.checked) });
    const timelineHead = h(
      "div",
      { class: "card-head" },
      h("h2", { id: "timeline-title" }, "Events"),
      h("div", { class: "toggle" }, toggle, h("label", { for: "show-internal" }, "Show internal events")),
    );
    return h(
      "div",
      { class: "run-page" },
      h("section", { class: "card run-summary", "aria-label": "Run summary" }, h("div", { class: "run-top" }, el.header, el.actions), el.meta),
      el.inputs,
      el.outcome,
      h(
        "div",
        { class: "run-grid" },
        h("section", { class: "card", "aria-labelledby": "timeline-title" }, timelineHead, el.timelineEmpty, el.timeline),
        h("section", { class: "card", "aria-labelledby": "graph-title" }, h("h2", { id: "graph-title" }, "Workflow graph"), el.graph, graphLegend()),
      ),
    );
  }

  close() {
    if (this.source) this.source.close();
  }

  async loadHandler() {
    const asked = ++this.fetches;
    try {
      const page = await api(handlersUrl({ handlerId: this.handlerId, limit: 1 }));
      const handler = page.handlers.find((x) => x.handler_id === this.handlerId);
      setLive(`Live · ${formatTime(new Date().toISOString())}`);
      if (handler) this.followRetry(handler, asked);
      if (handler) this.setHandler(handler);
      else this.renderNotFound();
    } catch (error) {
      setLive(`Offline: ${error.message}`, false);
    }
  }

  // The stream stopped at a final event of an earlier attempt, and a handler
  // read after it says the run goes on: follow it from the last event shown.
  followRetry(handler, asked) {
    if (!this.finalAt || asked < this.finalAt || handler.status !== "running") return;
    this.openStream(Math.max(-1, ...this.sequences));
  }

  setHandler(handler) {
    const json = JSON.stringify(handler);
    if (json === this.handlerJson) {
      this.renderMeta(); // the duration of a running run still moves
      return;
    }
    const first = this.handler === null;
    this.handlerJson = json;
    this.handler = handler;
    this.render();
    if (first) {
      this.openStream(); // only for a run that exists: a missing one would answer 404
      this.loadGraph();
    }
  }

  // The browser reconnects a dropped stream by itself, sending Last-Event-ID,
  // so the timeline resumes after the last event it shows.
  openStream(after = -1) {
    const source = new EventSource(`events/${enc(this.handlerId)}?sse=true&include_internal=true&after_sequence=${after}`);
    this.finalAt = 0;
    source.addEventListener("message", (message) => this.onMessage(message));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) this.loadHandler();
    });
    this.source = source;
  }

  onMessage(message) {
    const sequence = Number(message.lastEventId);
    if (this.sequences.has(sequence)) return; // a resumed stream never repeats, but be safe
    this.sequences.add(sequence);
    let envelope;
    try {
      envelope = JSON.parse(message.data);
    } catch {
      return;
    }
    const event = { sequence, type: envelope.type, types: envelope.types, value: envelope.value, internal: isInternal(envelope) };
    this.record(event);
    this.appendToTimeline(event);
    this.renderGraph();
    if (this.handler) this.render();
    if (event.type === "StopEvent" || (event.types || []).includes("StopEvent")) {
      // A final event: nothing follows, no need to reconnect. Unless the run
      // was retried since: then the handler read next says it runs again.
      this.source.close();
      this.finalAt = this.fetches + 1;
      this.loadHandler();
    }
  }

  record(event) {
    this.events.push(event);
    if (!event.internal) this.eventsSeen.add(event.type);
    if (event.type !== "StepStateChanged" || !event.value || !event.value.name) return;
    this.stepsRan.add(event.value.name);
    // Events passed between steps are not streamed; their step's state changes name them.
    for (const key of ["input_event_name", "output_event_name"]) {
      const name = className(event.value[key]);
      if (name) this.eventsSeen.add(name);
    }
  }

  waiting() {
    if (!this.handler || this.handler.status !== "running" || this.events.length === 0) return false;
    const last = this.events[this.events.length - 1];
    return last.type === "WorkflowIdleEvent" || (last.types || []).includes("InputRequiredEvent");
  }

  render() {
    const handler = this.handler;
    const badge = this.waiting() ? statusBadge("waiting", "waiting for input") : statusBadge(handler.status);
    const title = h("h1", {}, h("span", { class: "muted" }, "Run "), h("span", { class: "mono" }, handler.handler_id));
    this.el.header.replaceChildren(title, badge);
    this.renderMeta();
    this.renderActions();
    renderOutcome(this.el.outcome, handler);
    this.renderInputs();
  }

  renderNotFound() {
    const el = this.el;
    el.header.replaceChildren(h("h1", {}, "Run not found"));
    el.meta.replaceChildren(h("p", { class: "muted" }, `No run ${this.handlerId} here: it may have been purged.`));
    el.actions.replaceChildren(h("a", { class: "btn", href: "#/" }, "← All runs"));
    el.actions.dataset.status = "";
    el.outcome.hidden = true;
    el.inputs.hidden = true;
  }

  renderMeta() {
    const handler = this.handler;
    const rows = [
      ["Workflow", handler.workflow_name],
      ["Started", timeEl(handler.started_at)],
      ["Updated", timeEl(handler.updated_at)],
      ["Completed", timeEl(handler.completed_at)],
      ["Duration", formatDuration(runDuration(handler))],
      ["Run ID", h("span", { class: "mono" }, handler.run_id || "—")],
    ];
    this.el.meta.replaceChildren(...rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  }

  renderActions() {
    const actions = this.el.actions;
    const status = this.handler.status;
    // Rebuilt only when the status changes, so a focused button keeps its focus.
    if (actions.dataset.status === status) return;
    actions.dataset.status = status;
    const buttons =
      status === "running"
        ? [h("button", { type: "button", class: "btn btn-danger", onclick: (e) => this.cancel(e.target) }, "Cancel")]
        : [h("button", { type: "button", class: "btn btn-danger", onclick: (e) => this.purge(e.target) }, "Purge")];
    if (status === "failed") {
      buttons.unshift(h("button", { type: "button", class: "btn btn-primary", onclick: (e) => this.retry(e.target) }, "Retry"));
    }
    actions.replaceChildren(h("a", { class: "btn", href: "#/" }, "← All runs"), ...buttons);
  }

  // A retried run goes on from its last checkpoint; its log continues after
  // the failure, so the timeline follows again from the last event it shows.
  async retry(button) {
    if (!(await this.act(button, `handlers/${enc(this.handlerId)}/retry`, "retry", "retried"))) return;
    this.close();
    this.openStream(Math.max(-1, ...this.sequences));
    await this.loadHandler();
  }

  async cancel(button) {
    if (!confirm(`Cancel run ${this.handlerId}? Its steps stop and it ends as cancelled.`)) return;
    await this.act(button, `handlers/${enc(this.handlerId)}/cancel`, "cancel", "cancelled");
    await this.loadHandler();
  }

  async purge(button) {
    if (!confirm(`Purge run ${this.handlerId}? It is deleted for good.`)) return;
    if (await this.act(button, `handlers/${enc(this.handlerId)}/cancel?purge=true`, "purge", "purged")) location.hash = "#/";
  }

  async act(button, path, verb, done) {
    button.disabled = true;
    try {
      await api(path, { method: "POST" });
      toast(`Run ${this.handlerId} ${done}`);
      return true;
    } catch (error) {
      toast(`Could not ${verb} run ${this.handlerId}: ${error.message}`, "error");
      button.disabled = false;
      return false;
    }
  }

  async renderInputs() {
    const inputs = this.el.inputs;
    if (!this.waiting()) {
      inputs.hidden = true;
      this.inputsFor = null;
      return;
    }
    const key = this.events.length; // rebuilt once per new event, not on every poll
    if (this.inputsFor === key) return;
    this.inputsFor = key;
    try {
      const accepted = await acceptedEvents(this.handler.workflow_name);
      if (this.inputsFor !== key) return;
      const asked = [...this.events].reverse().find((e) => (e.types || []).includes("InputRequiredEvent"));
      const forms = accepted.map((schema, i) => sendForm(this.handlerId, schema, i));
      inputs.replaceChildren(
        h("h2", { id: "inputs-title" }, "Waiting for input"),
        asked ? askedBlock(asked) : "",
        ...(forms.length ? forms : [h("p", { class: "muted" }, "This workflow declares no events to send.")]),
      );
      inputs.hidden = false;
    } catch (error) {
      toast(`Could not load the workflow's events: ${error.message}`, "error");
    }
  }

  async loadGraph() {
    const name = this.handler.workflow_name;
    try {
      this.graph = (await cached(`graph:${name}`, () => api(`workflows/${enc(name)}/representation`))).graph;
      this.renderGraph();
    } catch (error) {
      this.el.graph.replaceChildren(h("p", { class: "form-error" }, `Graph unavailable: ${error.message}`));
    }
  }

  renderGraph() {
    if (this.graph) this.el.graph.replaceChildren(drawGraph(this.graph, this.stepsRan, this.eventsSeen));
  }

  setShowInternal(show) {
    this.showInternal = show;
    const shown = this.events.filter((e) => show || !e.internal);
    this.el.timeline.replaceChildren(...shown.map(timelineItem));
    this.el.timelineEmpty.hidden = shown.length > 0;
  }

  // New events are appended, so expanded entries stay open while the run streams.
  appendToTimeline(event) {
    if (event.internal && !this.showInternal) return;
    this.el.timeline.append(timelineItem(event));
    this.el.timelineEmpty.hidden = true;
  }
}

function renderOutcome(outcome, handler) {
  outcome.hidden = handler.status === "running";
  if (outcome.hidden) return;
  if (handler.status === "completed") {
    const value = handler.result ? handler.result.value : null;
    const shown = value && handler.result.type === "StopEvent" && "result" in value ? value.result : value;
    outcome.replaceChildren(h("h2", { id: "outcome-title" }, "Result"), h("pre", { class: "code result" }, pretty(shown)));
    return;
  }
  const fallback = handler.status === "cancelled" ? "The run was cancelled." : "No error message.";
  outcome.replaceChildren(
    h("h2", { id: "outcome-title" }, handler.status === "failed" ? "Error" : "Cancelled"),
    h("pre", { class: "code error-text" }, handler.error || fallback),
  );
}

function askedBlock(asked) {
  return h(
    "div",
    { class: "asked" },
    h("p", { class: "muted" }, `The run asked (${asked.type}):`),
    h("pre", { class: "code" }, pretty(asked.value)),
  );
}

function sendForm(handlerId, schema, index) {
  const fields = schemaFields(schema, `send-${index}`);
  const error = formError();
  const button = h("button", { type: "submit", class: "btn btn-primary" }, "Send");
  const onsubmit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const body = JSON.stringify({ event: { type: schema.title, value: fields.read() } });
      await api(`events/${enc(handlerId)}`, { method: "POST", body });
      toast(`Sent ${schema.title}`);
    } catch (e) {
      error.textContent = e.message;
      button.disabled = false;
    }
  };
  return h(
    "form",
    { class: "schema-form send-form", onsubmit },
    h("h3", { id: `send-${index}-title` }, schema.title),
    fields.elements,
    error,
    h("div", { class: "actions" }, button),
  );
}

// "<class 'app.AskEvent'>" or "AskEvent" -> "AskEvent"
function className(text) {
  if (typeof text !== "string") return null;
  const match = text.match(/(\w+)'?>?$/);
  return match ? match[1] : null;
}

function isInternal(envelope) {
  return (envelope.types || []).includes("InternalDispatchEvent");
}

// The events a caller may send: those the workflow declares, minus its start
// and stop events and those its own steps produce (the question, not the answer).
async function acceptedEvents(name) {
  const [events, schema, graph] = await Promise.all([
    cached(`events:${name}`, () => api(`workflows/${enc(name)}/events`)),
    cached(`schema:${name}`, () => api(`workflows/${enc(name)}/schema`)),
    cached(`graph:${name}`, () => api(`workflows/${enc(name)}/representation`)),
  ]);
  const produced = new Set(
    (graph.graph.nodes || []).filter((n) => n.node_type === "event" && (n.produced_by || []).length > 0).map((n) => n.label),
  );
  const excluded = new Set(["StartEvent", "StopEvent", schema.start.title, schema.stop.title]);
  return events.events.filter((sc) => sc.title && !excluded.has(sc.title) && !produced.has(sc.title));
}

function timelineItem(event) {
  const summary = summarize(event);
  return h(
    "li",
    { class: `event${event.internal ? " internal" : ""}`, "data-type": event.type },
    h("span", { class: "seq mono", title: "Sequence number" }, `#${event.sequence}`),
    h(
      "details",
      {},
      h("summary", {}, h("span", { class: "event-type" }, event.type), summary ? h("span", { class: "event-summary" }, summary) : null),
      h("pre", { class: "code" }, pretty(event.value)),
    ),
  );
}

function summarize(event) {
  const value = event.value || {};
  if (event.type === "StepStateChanged") return `${value.name} · ${String(value.step_state).replace("_", " ")}`;
  const text = JSON.stringify(value);
  if (text === "{}") return "";
  return text.length > 90 ? `${text.slice(0, 87)}…` : text;
}

// -- the graph --------------------------------------------------------------------------------

const NODE_H = 32;
const ROW_GAP = 30;
const COL_GAP = 16;
const PAD = 14;

function graphLegend() {
  return h(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    h("li", {}, h("span", { class: "swatch swatch-step ran", "aria-hidden": "true" }, "✓"), "step that ran"),
    h("li", {}, h("span", { class: "swatch swatch-event ran", "aria-hidden": "true" }, "✓"), "event that occurred"),
    h("li", {}, h("span", { class: "swatch swatch-step", "aria-hidden": "true" }), "step"),
    h("li", {}, h("span", { class: "swatch swatch-event", "aria-hidden": "true" }), "event"),
  );
}

// Rows by distance from the entry events; a cycle's nodes keep their first row.
function layers(graph) {
  const incoming = new Map(graph.nodes.map((n) => [n.id, 0]));
  const out = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const edge of graph.edges) {
    if (!out.has(edge.source) || !incoming.has(edge.target)) continue;
    out.get(edge.source).push(edge.target);
    incoming.set(edge.target, incoming.get(edge.target) + 1);
  }
  const depth = new Map();
  const roots = graph.nodes.filter((n) => (n.event_types || []).includes("StartEvent") || incoming.get(n.id) === 0);
  const queue = roots.map((n) => n.id);
  queue.forEach((id) => depth.set(id, 0));
  while (queue.length) {
    const id = queue.shift();
    for (const next of out.get(id)) {
      if (!depth.has(next)) {
        depth.set(next, depth.get(id) + 1);
        queue.push(next);
      }
    }
  }
  for (const node of graph.nodes) if (!depth.has(node.id)) depth.set(node.id, 0);
  return depth;
}

function nodeWidth(node) {
  return Math.max(84, Math.round(node.label.length * 7.2) + (node.node_type === "step" ? 44 : 30));
}

function drawGraph(graph, stepsRan, eventsSeen) {
  const depth = layers(graph);
  const rows = [];
  for (const node of graph.nodes) {
    const d = depth.get(node.id);
    (rows[d] = rows[d] || []).push(node);
  }
  const filled = rows.filter(Boolean);
  const rowWidth = (row) => row.reduce((sum, n) => sum + nodeWidth(n), 0) + (row.length - 1) * COL_GAP;
  const width = Math.max(...filled.map(rowWidth)) + PAD * 2 + 40;
  const height = PAD * 2 + filled.length * NODE_H + (filled.length - 1) * ROW_GAP;
  const positions = new Map();
  filled.forEach((row, r) => {
    let x = (width - rowWidth(row)) / 2;
    const y = PAD + r * (NODE_H + ROW_GAP);
    for (const node of row) {
      const w = nodeWidth(node);
      positions.set(node.id, { x, y, w });
      x += w + COL_GAP;
    }
  });
  const ran = graph.nodes.filter((n) => n.node_type === "step" && stepsRan.has(n.label)).map((n) => n.label);
  const steps = graph.nodes.filter((n) => n.node_type === "step").length;
  const label = `Graph of ${graph.name}: ${steps} steps; ${ran.length ? `ran: ${ran.join(", ")}` : "no step has run yet"}.`;
  return s(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, class: "graph-svg" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }))),
    graph.edges.map((edge) => drawEdge(positions.get(edge.source), positions.get(edge.target))),
    graph.nodes.map((node) => drawNode(node, positions.get(node.id), stepsRan, eventsSeen)),
  );
}

function drawEdge(from, to) {
  if (!from || !to) return null;
  const x1 = from.x + from.w / 2;
  const x2 = to.x + to.w / 2;
  let d;
  if (to.y > from.y) {
    const y1 = from.y + NODE_H;
    const y2 = to.y;
    const mid = (y1 + y2) / 2;
    d = `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}`;
  } else {
    // A loop back up: leave from the right side and come round.
    const sx = from.x + from.w;
    const sy = from.y + NODE_H / 2;
    const tx = to.x + to.w;
    const ty = to.y + NODE_H / 2;
    const bend = Math.max(sx, tx) + 32;
    d = `M${sx},${sy} C${bend},${sy} ${bend},${ty} ${tx},${ty}`;
  }
  return s("path", { d, class: "edge", "marker-end": "url(#arrow)" });
}

function drawNode(node, pos, stepsRan, eventsSeen) {
  const isStep = node.node_type === "step";
  const marked = isStep ? stepsRan.has(node.label) : eventsSeen.has(node.label);
  const classes = ["node", `node-${node.node_type}`, marked ? "ran" : ""].join(" ");
  const text = `${marked ? "✓ " : ""}${node.label}`;
  const tooltip = `${isStep ? "Step" : node.node_type === "event" ? "Event" : "External"} ${node.label}${marked ? (isStep ? " (ran)" : " (seen)") : ""}`;
  return s(
    "g",
    { class: classes, transform: `translate(${pos.x},${pos.y})`, "data-node": node.label },
    s("title", {}, tooltip),
    s("rect", { width: pos.w, height: NODE_H, rx: isStep ? 6 : NODE_H / 2 }),
    s("text", { x: pos.w / 2, y: NODE_H / 2, "dominant-baseline": "central", "text-anchor": "middle" }, text),
  );
}

// -- start ------------------------------------------------------------------------------------

window.addEventListener("hashchange", () => {
  route();
  // Screen readers and keyboards continue from the new view, not the old link.
  main.focus({ preventScroll: true });
});
document.querySelector("[data-skip]").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
route();
