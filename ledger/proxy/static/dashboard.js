// The proxy dashboard: polls /dashboard/state and writes every value with textContent
// (never innerHTML), so names from the ledger are always shown as text.
"use strict";
(function () {
  const POLL_MS = 2000;
  const history = new Map();  // budget label -> spent figures seen, for the trend line

  function cell(row, value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "–" : String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function money(value) { return value === null || value === undefined ? "–" : "$" + value; }

  function label(b) {
    let text = b.project;
    if (b.user) text += " user=" + b.user;
    if (b.tag) text += " tag=" + b.tag;
    return text + " " + b.period + (b.hard === false ? " (soft)" : "");
  }

  function bar(b) {
    const outer = document.createElement("div");
    outer.className = "bar";
    const limit = Number(b.limit) || 0;
    const spent = document.createElement("span");
    spent.className = "spent";
    const held = document.createElement("span");
    held.className = "held";
    const s = limit ? Math.min(100, 100 * Number(b.spent) / limit) : 0;
    const h = limit ? Math.min(100 - s, 100 * Number(b.held) / limit) : 0;
    spent.style.width = s + "%";
    held.style.left = s + "%";
    held.style.width = h + "%";
    outer.append(spent, held);
    outer.title = (b.percent_used === null ? "–" : b.percent_used + "%") + " used";
    return outer;
  }

  function trend(key, spent) {
    const seen = history.get(key) || [];
    seen.push(Number(spent));
    if (seen.length > 60) seen.shift();
    history.set(key, seen);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "trend");
    svg.setAttribute("viewBox", "0 0 100 20");
    svg.setAttribute("preserveAspectRatio", "none");
    const max = Math.max(...seen) || 1;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", seen.map((v, i) =>
      (seen.length > 1 ? (100 * i) / (seen.length - 1) : 100) + "," + (19 - (18 * v) / max)).join(" "));
    svg.appendChild(line);
    return svg;
  }

  function fill(id, items, render) {
    const body = document.querySelector("#" + id + " tbody");
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      render(tr, item);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function show(state) {
    document.getElementById("rate").textContent = String(state.rate.calls_last_minute);
    document.getElementById("updated").textContent = "updated " + state.now.slice(11, 19) + " UTC";
    document.getElementById("budgets-empty").hidden = state.budgets.length > 0;
    fill("budgets", state.budgets, (tr, b) => {
      const key = label(b);
      tr.dataset.project = b.project;
      cell(tr, key, "name");
      cell(tr, b.window);
      cell(tr, money(b.limit), "num limit");
      cell(tr, money(b.spent), "num spent");
      cell(tr, money(b.held), "num held");
      cell(tr, money(b.remaining), "num remaining");
      const used = cell(tr, "", "status-" + b.status);
      used.appendChild(bar(b));
      cell(tr, "").appendChild(trend(key + " " + b.window, b.spent));
    });
    fill("calls", state.calls, (tr, c) => {
      cell(tr, c.at.slice(0, 19).replace("T", " "));
      cell(tr, c.project, "name");
      cell(tr, c.model);
      cell(tr, c.status);
      cell(tr, c.prompt_tokens, "num");
      cell(tr, c.completion_tokens, "num");
      cell(tr, money(c.cost), "num");
    });
    fill("alerts", state.alerts, (tr, a) => {
      cell(tr, a.at.slice(0, 19).replace("T", " "));
      cell(tr, label(a), "name");
      cell(tr, a.window);
      cell(tr, a.threshold + "%", "num");
      cell(tr, money(a.spent), "num");
      cell(tr, money(a.limit), "num");
    });
    fill("invoices", state.invoices, (tr, i) => {
      cell(tr, i.number);
      cell(tr, i.project, "name");
      cell(tr, i.month);
      cell(tr, money(i.total), "num");
      cell(tr, i.state);
    });
  }

  async function poll() {
    try {
      const reply = await fetch("/dashboard/state", { credentials: "same-origin", cache: "no-store" });
      if (reply.status === 401 || reply.status === 403) { window.location.reload(); return; }
      if (reply.ok) show(await reply.json());
    } catch (err) {
      document.getElementById("updated").textContent = "not reachable: retrying";
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
