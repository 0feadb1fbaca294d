// misim console: polls read-only JSON under /console/api/ and re-renders the page when the span
// store's version changes (every request and flow step bumps it).
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token");
const page = (location.pathname.replace(/\/+$/, "").split("/")[2]) || "resources";
let shownVersion = -1;
let selectedTrace = params.get("trace") || "last";

function api(path) {
  const sep = path.includes("?") ? "&" : "?";
  return token ? `${path}${sep}token=${encodeURIComponent(token)}` : path;
}
async function getJson(path) {
  const r = await fetch(api(path), { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
function esc(s) {
  return String(s ?? "").replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}
function table(headers, rows) {
  if (!rows.length) return `<p class="muted">none</p>`;
  return `<table><tr>${headers.map(h => `<th>${esc(h)}</th>`).join("")}</tr>` +
    rows.map(r => `<tr>${r.map(c => `<td>${c}</td>`).join("")}</tr>`).join("") + `</table>`;
}
function syncCell(s) {
  return `<span class="${s === "Succeeded" ? "ok" : s.startsWith("Failed") ? "bad" : "muted"}">${esc(s)}</span>`;
}
function identities(vm) {
  const out = [];
  if (vm.systemAssigned) out.push(`system-assigned <code>${esc(vm.systemAssigned.principalId)}</code>`);
  for (const u of vm.userAssigned) out.push(`${esc(u.name)} <code>${esc(u.principalId)}</code>`);
  return out.join("<br>") || `<span class="muted">none</span>`;
}
function time(us) { return new Date(us / 1000).toISOString().replace("T", " ").replace("Z", ""); }

async function renderResources(main) {
  const s = await getJson("/console/api/state");
  main.innerHTML =
    `<h2>Subscriptions</h2>` + table(["subscription", "tenant", "name"], s.subscriptions.map(x => [`<code>${esc(x.id)}</code>`, `<code>${esc(x.tenantId)}</code>`, esc(x.name)])) +
    `<h2>Virtual machines and their identities</h2>` +
    table(["VM", "resource group", "host", "identities", "state"], s.vms.map(v => [esc(v.name) + (v.scaleSet ? ` <span class="muted">(${esc(v.scaleSet)})</span>` : ""), esc(v.resourceGroup), esc(v.host), identities(v), syncCell(v.sync)])) +
    `<h2>User-assigned identities</h2>` +
    table(["identity", "resource group", "client ID", "principal ID", "state"], s.userAssignedIdentities.map(u => [esc(u.name), esc(u.resourceGroup), `<code>${esc(u.clientId)}</code>`, `<code>${esc(u.principalId)}</code>`, syncCell(u.sync)])) +
    `<h2>Role assignments</h2>` +
    table(["role", "principal", "scope"], s.roleAssignments.map(r => [esc(r.role), `<code>${esc(r.principalId)}</code> <span class="muted">${esc(r.principalType)}</span>`, `<code>${esc(r.scope)}</code>`]));
}

async function renderHosts(main) {
  const s = await getJson("/console/api/state");
  main.innerHTML = `<h2>Hosts</h2>` + s.hosts.map(h => `<div class="host"><h2>${esc(h.name)} <span class="muted">${h.vms.length} VM(s)</span></h2>` +
    table(["VM", "IMDS endpoint", "placed", "identities", "IMDS state"], h.vms.map(v => [esc(v.name), `<code>${esc(v.imdsEndpoint)}</code>`, v.placed ? "yes" : "no", identities(v), syncCell(v.sync)])) + `</div>`).join("");
}

async function renderEvents(main) {
  const ev = await getJson("/console/api/events?limit=200");
  main.innerHTML = `<h2>Live event stream <span class="muted">(flow steps, newest first)</span></h2>` +
    table(["time (UTC)", "step", "party", "VM", "identity / principal", "resource", "outcome", "trace"], ev.map(e => [
      esc(time(e.time_us)), esc(e.name), esc(e.party), esc((e.vm || "").split("/").pop()),
      esc((e.identity || "").split("/").pop() || e.principal || ""), esc(e.resource || ""),
      `<span class="${e.outcome === "success" ? "ok" : "bad"}">${esc(e.outcome || "")}</span>`,
      `<a href="/console/flows?trace=${esc(e.traceId)}${token ? "&token=" + encodeURIComponent(token) : ""}"><code>${esc(e.traceId.slice(0, 8))}</code></a>`]));
}

async function renderFlows(main) {
  const flows = await getJson("/console/api/flows?limit=50");
  const items = [`<li data-trace="last" class="${selectedTrace === "last" ? "sel" : ""}"><b>The last token</b> (its seven steps)</li>`]
    .concat(flows.map(f => `<li data-trace="${esc(f.traceId)}" class="${selectedTrace === f.traceId ? "sel" : ""}">${esc(time(f.start_us))}<br>${esc(f.summary)} <code>${esc(f.traceId.slice(0, 8))}</code></li>`));
  const r = await fetch(api(`/console/api/diagram.svg?trace=${encodeURIComponent(selectedTrace)}`), { cache: "no-store" });
  const svg = r.ok ? await r.text() : `<p class="muted">No flow to draw yet: enable an identity and request a token.</p>`;
  main.innerHTML = `<h2>Flows <span class="muted">(sequence diagrams)</span></h2><div class="flows"><ul>${items.join("")}</ul><div id="diagram">${svg}</div></div>`;
  for (const li of main.querySelectorAll("li[data-trace]")) {
    li.onclick = () => { selectedTrace = li.dataset.trace; refresh(true); };
  }
}

const pages = { resources: renderResources, hosts: renderHosts, events: renderEvents, flows: renderFlows };

async function refresh(force) {
  const status = document.getElementById("status");
  try {
    const v = await getJson("/console/api/version");
    if (force || v.version !== shownVersion) {
      await (pages[page] || renderResources)(document.getElementById("main"));
      shownVersion = v.version;
    }
    status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = `error: ${e.message}`;
  }
}

for (const a of document.querySelectorAll("nav a")) {
  if (a.dataset.page === page) a.classList.add("active");
  if (token) a.href += `?token=${encodeURIComponent(token)}`;
}
refresh(true);
setInterval(() => refresh(false), 2000);
