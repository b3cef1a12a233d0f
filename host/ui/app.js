// The Tierhost dashboard: a view of /api/status, /api/mode and /api/routing, kept live
// by the /api/events stream. Everything from the host is put in the page as text
// (textContent), never as markup: a model name or a reason cannot become an element.
"use strict";

const TOKEN_KEY = "tierhost-token";
const MIN_REFRESH_MS = 1000; // no fetch of the state more often than once a second
const TASK_LIST_LIMIT = 50;
const SWAP_LIMIT = 100;
const ACTIVITY_LIMIT = 100;
const STATUSES = ["queued", "waiting_device", "running", "validating", "done", "failed", "cancelled"];
const TERMINAL = new Set(["done", "failed", "cancelled"]);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  refreshAt: 0,
  timer: null,
  routes: {},
  openTask: null, // the id of the task whose details are shown
};

class HostError extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askForToken();
    throw new HostError("this host asks for its token");
  }
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = null; }
  if (!response.ok) {
    const why = body && body.error && body.error.message;
    throw new HostError(why || `${response.status}: ${text.slice(0, 200)}`);
  }
  return body;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function whyFailed(error) {
  // the host's own words for a refusal; anything else means it did not answer
  return error instanceof HostError ? error.message : `the host did not answer: ${error}`;
}

function say(text) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.hidden = !text;
}

function askForToken() {
  document.getElementById("token-form").hidden = false;
}

// -- rendering -----------------------------------------------------------------------

function renderDevices(status, modes) {
  const box = document.getElementById("devices");
  const cards = status.devices.map((device) => {
    const budget = device.budget_mb;
    const used = device.used_mb || 0;
    const share = budget ? Math.min(100, Math.round((100 * used) / budget)) : 0;
    const card = el("article", { class: "card", "aria-label": `device ${device.name}` });
    card.append(el("h3", { text: `${device.name} (${device.kind})` }));
    if (device.kind === "gpu") {
      const label = `${device.name} mode`;
      const select = el("select", { "aria-label": label, "data-device": device.name });
      for (const mode of modes.valid) {
        select.append(el("option", { value: mode, text: mode, selected: mode === device.mode }));
      }
      select.addEventListener("change", () => setMode(device.name, select.value));
      card.append(el("label", {}, "Mode ", select));
    }
    const measured = device.gpu_used_mb === null ? "" : `, card reads ${device.gpu_used_mb} MiB`;
    const of = budget === null ? "no budget" : `${used} / ${budget} MiB counted${measured}`;
    card.append(el("div", { class: "muted", text: of }));
    if (budget) {
      const bar = el("div", { class: "bar", role: "img", "aria-label": `${device.name} memory ${share}%` });
      const fill = el("span", { class: share >= 90 ? "full" : "" });
      fill.style.width = `${share}%`;
      bar.append(fill);
      card.append(bar);
    }
    card.append(el("div", { text: `Residents: ${device.residents.join(", ") || "none"}` }));
    if (device.asleep && device.asleep.length) {
      card.append(el("div", { text: `Asleep: ${device.asleep.join(", ")}` }));
    }
    if (device.hold) card.append(el("div", { class: "muted", text: `Held: ${device.hold}` }));
    card.append(el("div", { text: `Queue: ${device.queue}` }));
    if (device.waiting.length) {
      const list = el("ul", { class: "plain" });
      for (const waiter of device.waiting) {
        const held = waiter.held ? " (held by the mode)" : "";
        list.append(el("li", { text: `${waiter.model}: ${waiter.work}, waited ${waiter.waited_s.toFixed(1)} s${held}` }));
      }
      card.append(list);
    }
    if (device.order && device.order.why) {
      card.append(el("div", { class: "muted", text: `Served first: ${device.order.why}` }));
    }
    return card;
  });
  box.replaceChildren(...cards);
}

function modelNotes(model) {
  const notes = [];
  if (model.kind === "remote") {
    notes.push(model.reachable ? "reachable" : "unreachable");
    if (model.box_mode && model.box_mode.gaming) notes.push("its box is gaming");
  }
  if (model.sleep && model.sleep.asleep) notes.push(`asleep since ${new Date(model.sleep.asleep_since * 1000).toLocaleTimeString()}`);
  if (model.sleep && model.sleep.last_wake_s !== null) notes.push(`last wake ${model.sleep.last_wake_s.toFixed(2)} s`);
  if (model.restarts) notes.push(`restarts ${model.restarts}`);
  if (model.last_error) notes.push(`last error: ${model.last_error}`);
  return notes.join("; ");
}

function kvSlots(slots) {
  if (!slots) return "";
  return `${slots.saved} saved, ${slots.saves} saves, ${slots.restores} restores (${slots.tokens_saved} tokens), ${slots.restores_missed} missed`;
}

function latestSpeeds(requests) {
  // the newest tokens/s each model answered with, from the activity log (newest first)
  const speeds = {};
  for (const r of requests) if (r.model && r.tokens_per_s && !(r.model in speeds)) speeds[r.model] = r.tokens_per_s;
  return speeds;
}

function renderModels(status, requests) {
  const speeds = latestSpeeds(requests);
  const rows = status.models.map((model) => {
    const local = model.kind !== "remote";
    const actions = el("td");
    if (local) {
      const load = el("button", { type: "button", "aria-label": `Load ${model.name}`, text: "Load" });
      load.addEventListener("click", () => modelAction(model.name, "load"));
      const unload = el("button", { type: "button", "aria-label": `Unload ${model.name}`, text: "Unload" });
      unload.addEventListener("click", () => modelAction(model.name, "unload"));
      actions.append(load, unload);
    }
    const warm = model.warm === null || model.warm === undefined ? "" : `${Math.round(model.warm * 100)}%`;
    return el(
      "tr",
      { "data-model": model.name },
      el("th", { scope: "row", text: model.name }),
      el("td", { text: model.tier || "" }),
      el("td", { text: model.kind }),
      el("td", { class: `state-${model.state}`, text: model.state }),
      el("td", { text: model.device || (model.base_url || "") }),
      el("td", { class: "num", text: model.port || "" }),
      el("td", { class: "num", text: model.in_flight }),
      el("td", { class: "num", text: model.queued }),
      el("td", { class: "num", text: model.memory_mb || "" }),
      el("td", { class: "num", text: speeds[model.name] ? speeds[model.name].toFixed(1) : "" }),
      el("td", { text: model.profile || "" }),
      el("td", { class: "num", text: warm }),
      el("td", { text: kvSlots(model.kv_slots) }),
      el("td", { text: modelNotes(model) }),
      actions,
    );
  });
  document.querySelector("#models tbody").replaceChildren(...rows);
}

function renderRouting(routing) {
  state.routes = routing.routes;
  const standing = routing.standing_rules || {};
  const types = [...new Set([...Object.keys(routing.routes), ...Object.keys(standing)])];
  const rows = types.map((type) => {
    const locked = Object.hasOwn(standing, type);
    const tier = locked ? standing[type] : routing.routes[type];
    const select = el("select", { "aria-label": `route for ${type}`, disabled: locked });
    for (const name of routing.tiers) {
      select.append(el("option", { value: name, text: name, selected: name === tier }));
    }
    select.addEventListener("change", () => setRoute(type, select.value));
    const note = locked ? `standing rule: always ${standing[type]} (the config's; not editable here)` : "";
    return el("tr", {}, el("th", { scope: "row", text: type }), el("td", {}, select), el("td", { class: "muted", text: note }));
  });
  document.querySelector("#routing tbody").replaceChildren(...rows);
}

function exportRouting() {
  const text = `${JSON.stringify({ version: 1, routes: state.routes }, null, 2)}\n`;
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })), download: "model-routing.json" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

function routesOf(text) {
  // the file's shape, as `tierhost routing import` reads it; the host checks the names
  let document;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new HostError(`model-routing.json is not JSON: ${error.message}`);
  }
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    throw new HostError('model-routing.json must hold an object {"version": 1, "routes": {...}}');
  }
  if ((document.version ?? 1) !== 1) throw new HostError(`version ${document.version} is not supported (this host reads version 1)`);
  const unknown = Object.keys(document).filter((key) => key !== "version" && key !== "routes");
  if (unknown.length) throw new HostError(`unknown field "${unknown[0]}" (a version 1 file has "version" and "routes")`);
  const routes = document.routes;
  if (routes === null || typeof routes !== "object" || Array.isArray(routes)) throw new HostError('it has no "routes" object of type → tier');
  for (const [type, tier] of Object.entries(routes)) {
    if (typeof tier !== "string") throw new HostError(`routes["${type}"] is not a tier name`);
  }
  return routes;
}

async function importRouting(input) {
  const file = input.files && input.files[0];
  input.value = "";
  if (!file) return;
  await act(async () => {
    if (file.size > 1024 * 1024) throw new HostError("model-routing.json is larger than 1 MiB; a routing table is a few lines");
    const routes = routesOf(await file.text());
    await api("/api/routing", { method: "PUT", body: JSON.stringify({ routes }) });
  });
}

async function tryRoute(event) {
  event.preventDefault();
  const box = document.getElementById("try-result");
  try {
    const decision = await api("/api/route", { method: "POST", body: JSON.stringify({ prompt: document.getElementById("try-prompt").value }) });
    const where = [decision.type && `type ${decision.type}`, `tier ${decision.tier}`, `model ${decision.model}`, decision.device && `on ${decision.device}`];
    const parts = [el("div", { class: "decision", text: where.filter(Boolean).join(" → ") })];
    if (decision.wait_reason) parts.push(el("div", { class: "muted", text: `would wait: ${decision.wait_reason}` }));
    parts.push(el("ul", { class: "plain" }, ...decision.reasons.map((reason) => el("li", { text: reason }))));
    box.replaceChildren(...parts);
    say("");
  } catch (error) {
    box.replaceChildren(el("div", { text: whyFailed(error) }));
  }
  box.hidden = false;
}

function fillSelect(select, options) {
  // options: [value, label] pairs after the select's first (empty) option; the choice stays
  const chosen = select.value;
  const first = select.options[0];
  select.replaceChildren(first, ...options.map(([value, label]) => el("option", { value, text: label })));
  select.value = options.some(([value]) => value === chosen) ? chosen : "";
}

function renderTaskControls(status, routing) {
  const types = Object.keys(routing.routes).map((type) => [type, type]);
  fillSelect(document.getElementById("submit-type"), types);
  fillSelect(document.getElementById("filter-type"), types);
  const targets = [
    ...routing.tiers.map((tier) => [`tier:${tier}`, `tier ${tier}`]),
    ...status.models.map((model) => [`model:${model.name}`, `model ${model.name}`]),
  ];
  fillSelect(document.getElementById("submit-target"), targets);
  fillSelect(document.getElementById("filter-status"), STATUSES.map((s) => [s, s]));
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function renderTasks(tasks) {
  const rows = tasks.map((task) => {
    const show = el("button", { type: "button", class: "link", "aria-label": `Show task ${task.id}`, text: task.id.slice(0, 8) });
    show.addEventListener("click", () => openTask(task.id));
    return el(
      "tr",
      { "data-task": task.id, "aria-selected": task.id === state.openTask ? "true" : "false" },
      el("td", {}, show),
      el("td", { text: when(task.created) }),
      el("td", { text: task.type || "" }),
      el("td", { text: task.tier || "" }),
      el("td", { text: task.model || "" }),
      el("td", { class: `status-${task.status}`, text: task.status }),
      el("td", { class: "num", text: task.tokens }),
      el("td", { class: "prompt", text: task.prompt.slice(0, 120) }),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no tasks" })));
  document.querySelector("#tasks tbody").replaceChildren(...rows);
}

function section(title, ...content) {
  return el("section", { "aria-label": title }, el("h4", { text: title }), ...content);
}

function renderTaskDetail(task) {
  const box = document.getElementById("task-detail");
  const parts = [el("h3", { text: `Task ${task.id}` })];
  const where = [task.type && `type ${task.type}`, task.tier && `tier ${task.tier}`, task.model && `model ${task.model}`];
  parts.push(el("div", {}, el("span", { class: `status-${task.status}`, "data-status": task.status, text: task.status }), ` — ${where.filter(Boolean).join(", ")}`));
  const override = Object.entries(task.override || {})
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  parts.push(el("div", { class: "muted", text: `Validation ${task.validation}${override ? `; asked for ${override}` : ""}${task.queue_position ? `; position ${task.queue_position} in its model's queue` : ""}` }));
  if (!TERMINAL.has(task.status)) {
    const cancel = el("button", { type: "button", text: "Cancel" });
    cancel.addEventListener("click", () => act(() => api(`/api/tasks/${encodeURIComponent(task.id)}/cancel`, { method: "POST" })));
    parts.push(el("div", {}, cancel));
  }
  parts.push(section("Task prompt", el("pre", { text: task.prompt })));
  if (task.decision && task.decision.reasons) {
    parts.push(section("Why it went there", el("ul", { class: "plain" }, ...task.decision.reasons.map((r) => el("li", { text: r })))));
  }
  const events = (task.events || []).map((e) => el("li", { text: `${when(e.at)} ${e.status}: ${e.reason}` }));
  parts.push(section("Events", el("ol", { class: "plain" }, ...events)));
  if (task.result !== null && task.result !== undefined) parts.push(section("Result", el("pre", { class: "result", text: task.result })));
  if (task.error) parts.push(section("Error", el("pre", { text: task.error })));
  if (task.findings && task.findings.length) {
    const findings = task.findings.map((f) => el("li", { text: typeof f === "string" ? f : JSON.stringify(f) }));
    parts.push(section(`Validator findings (${task.validated === false ? "not passed" : "passed"})`, el("ul", { class: "plain" }, ...findings)));
  }
  if (task.patch) parts.push(section("Patch", el("pre", { text: task.patch })));
  box.replaceChildren(...parts);
  box.hidden = false;
}

const SVG = "http://www.w3.org/2000/svg";

function barChart(box, values, label, failed = []) {
  // bars as SVG rectangles built through the DOM: no markup from the host, no inline style
  const width = 280;
  const height = 50;
  const top = Math.max(...values, 0) || 1;
  const step = Math.min(24, values.length ? width / values.length : width); // thin bars, newest right
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const shown = values.length ? `${values.length} values, the largest ${top.toFixed(2)}` : "no values yet";
  svg.setAttribute("aria-label", `${label}: ${shown}`);
  values.forEach((value, i) => {
    const rect = document.createElementNS(SVG, "rect");
    const h = Math.max(1, (value / top) * (height - 2));
    rect.setAttribute("x", String(width - (values.length - i) * step + 1));
    rect.setAttribute("y", String(height - h));
    rect.setAttribute("width", String(Math.max(1, step - 2)));
    rect.setAttribute("height", String(h));
    if (failed[i]) rect.setAttribute("class", "failed");
    const title = document.createElementNS(SVG, "title");
    title.textContent = value.toFixed(2);
    rect.append(title);
    svg.append(rect);
  });
  box.replaceChildren(svg);
}

function renderSwaps(swaps) {
  const oldestFirst = [...swaps].reverse();
  const timed = oldestFirst.filter((swap) => swap.duration_s !== null);
  barChart(document.getElementById("swap-chart"), timed.map((s) => s.duration_s), "Swap time", timed.map((s) => s.outcome !== "ready"));
  const items = swaps.slice(0, 50).map((swap) => {
    const took = swap.duration_s === null ? "under way" : `${swap.duration_s.toFixed(2)} s`;
    const evicted = swap.evicted.length && !swap.reason.includes("evicted") ? `, evicted ${swap.evicted.join(", ")}` : "";
    return el("li", { text: `${when(swap.started)} ${swap.model} on ${swap.device}: ${swap.outcome}, ${took}${evicted} — ${swap.reason}` });
  });
  if (!items.length) items.push(el("li", { class: "muted", text: "no swaps yet" }));
  document.getElementById("swaps").replaceChildren(...items);
}

function renderActivity(requests) {
  const speeds = requests.filter((r) => r.tokens_per_s).reverse().map((r) => r.tokens_per_s);
  barChart(document.getElementById("speed-chart"), speeds, "Tokens per second");
  const rows = requests.map((r) => {
    const tokens = r.prompt_tokens === null && r.completion_tokens === null ? "" : `${r.prompt_tokens ?? "?"} / ${r.completion_tokens ?? "?"}`;
    return el(
      "tr",
      { "data-request": r.id },
      el("td", { text: when(r.at) }),
      el("td", { text: `${r.method} ${r.path}` }),
      el("td", { text: r.agent || r.client || "" }),
      el("td", { text: r.asked || "" }),
      el("td", { text: r.model || "" }),
      el("td", { text: r.tier || "" }),
      el("td", { class: r.status >= 400 ? "num status-error" : "num", text: r.status }),
      el("td", { class: "num", text: r.wait_ms === null ? "" : r.wait_ms.toFixed(0) }),
      el("td", { class: "num", text: tokens }),
      el("td", { class: "num", text: r.tokens_per_s === null ? "" : r.tokens_per_s.toFixed(1) }),
      el("td", { class: "num", text: r.duration_ms.toFixed(0) }),
      el("td", { class: "error", text: r.error || "" }),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 12, class: "muted", text: "no requests yet" })));
  document.querySelector("#activity tbody").replaceChildren(...rows);
}

async function openTask(id) {
  state.openTask = id;
  try {
    renderTaskDetail(await api(`/api/tasks/${encodeURIComponent(id)}`));
    for (const row of document.querySelectorAll("#tasks tbody tr")) {
      row.setAttribute("aria-selected", row.dataset.task === id ? "true" : "false");
    }
  } catch (error) {
    say(whyFailed(error));
  }
}

function taskQuery() {
  const query = new URLSearchParams({ limit: String(TASK_LIST_LIMIT) });
  const status = document.getElementById("filter-status").value;
  const type = document.getElementById("filter-type").value;
  if (status) query.set("status", status);
  if (type) query.set("type", type);
  return `/api/tasks?${query}`;
}

async function submitTask(event) {
  event.preventDefault();
  const prompt = document.getElementById("prompt");
  const body = { prompt: prompt.value };
  const type = document.getElementById("submit-type").value;
  const target = document.getElementById("submit-target").value;
  const validation = document.getElementById("submit-validation").value;
  if (type) body.type = type;
  if (target) body[target.split(":")[0]] = target.slice(target.indexOf(":") + 1);
  if (validation) body.validation = validation;
  await act(async () => {
    const task = await api("/api/tasks", { method: "POST", body: JSON.stringify(body) });
    prompt.value = "";
    await openTask(task.id);
  });
}

// -- actions -------------------------------------------------------------------------

async function act(work) {
  try {
    await work();
    say("");
  } catch (error) {
    say(whyFailed(error));
  }
  refreshSoon(0);
}

function setMode(device, mode) {
  return act(() => api("/api/mode", { method: "PUT", body: JSON.stringify({ device, mode }) }));
}

function setRoute(type, tier) {
  // PUT replaces the table: send all of it, this one route changed
  const routes = { ...state.routes, [type]: tier };
  return act(() => api("/api/routing", { method: "PUT", body: JSON.stringify({ routes }) }));
}

function modelAction(name, verb) {
  say(verb === "load" ? `loading ${name}…` : `unloading ${name}…`);
  return act(() => api(`/api/models/${encodeURIComponent(name)}/${verb}`, { method: "POST" }));
}

// -- keeping it live -----------------------------------------------------------------

async function refresh() {
  state.timer = null;
  state.refreshAt = Date.now();
  try {
    const [status, modes, routing, tasks, open, swaps, activity] = await Promise.all([
      api("/api/status"),
      api("/api/mode"),
      api("/api/routing"),
      api(taskQuery()),
      state.openTask === null ? null : api(`/api/tasks/${encodeURIComponent(state.openTask)}`),
      api(`/api/swaps?limit=${SWAP_LIMIT}`),
      api(`/api/requests?limit=${ACTIVITY_LIMIT}`),
    ]);
    renderDevices(status, modes);
    renderModels(status, activity.requests);
    renderRouting(routing);
    renderTaskControls(status, routing);
    renderTasks(tasks.tasks);
    if (open !== null) renderTaskDetail(open);
    renderSwaps(swaps.swaps);
    renderActivity(activity.requests);
    document.body.dataset.loaded = "true";
  } catch (error) {
    say(whyFailed(error));
  }
}

function refreshSoon(delay) {
  if (state.timer !== null) return;
  const wait = Math.max(delay ?? 0, state.refreshAt + MIN_REFRESH_MS - Date.now(), 0);
  state.timer = setTimeout(refresh, wait);
}

function setLive(on) {
  const badge = document.getElementById("live");
  badge.textContent = on ? "live" : "reconnecting…";
  badge.className = `live ${on ? "on" : "off"}`;
}

async function follow() {
  // fetch, not EventSource: the stream must carry the token header off loopback.
  for (;;) {
    try {
      const headers = state.token ? { authorization: `Bearer ${state.token}` } : {};
      const response = await fetch("/api/events", { headers });
      if (response.status === 401) askForToken();
      if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
      setLive(true);
      refreshSoon(0);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (frame.split("\n").some((line) => line.startsWith("event:"))) refreshSoon();
        }
      }
    } catch (_) {
      // the host went away or is restarting: say so, and try again shortly
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  document.getElementById("token-form").hidden = true;
  refreshSoon(0);
});

document.getElementById("submit-form").addEventListener("submit", submitTask);
document.getElementById("try-form").addEventListener("submit", tryRoute);
document.getElementById("routing-export").addEventListener("click", exportRouting);
document.getElementById("routing-import").addEventListener("change", (event) => importRouting(event.target));
for (const id of ["filter-status", "filter-type"]) {
  document.getElementById(id).addEventListener("change", () => refreshSoon(0));
}

refreshSoon(0);
follow();
