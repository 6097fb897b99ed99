// slmops fleet dashboard: live updates from /stream (server-sent events) and the fleet page's filters.
// The server renders every row and event item; this script only puts them where they belong.
"use strict";
(() => {
  const body = document.body;
  const page = body.dataset.page;
  const status = document.getElementById("live-status");

  const fromHtml = (html) => {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  };

  // fleet page: filters --------------------------------------------------------------------------
  const groupSel = document.getElementById("filter-group");
  const stateSel = document.getElementById("filter-state");
  const fleetBody = document.querySelector("#fleet tbody");

  const matches = (row) => {
    const g = groupSel ? groupSel.value : "";
    const s = stateSel ? stateSel.value : "";
    return (!g || row.dataset.groups.includes(` ${g} `)) && (!s || row.dataset.state === s);
  };
  const applyFilter = (row) => { row.hidden = !matches(row); };
  const updateCounts = () => {
    const counts = document.getElementById("counts");
    if (!counts || !fleetBody) return;
    const rows = fleetBody.rows;
    let shown = 0;
    for (const r of rows) if (!r.hidden) shown += 1;
    counts.textContent = `${shown} of ${rows.length} devices`;
  };
  const filterAll = () => {
    for (const r of fleetBody.rows) applyFilter(r);
    updateCounts();
    const q = new URLSearchParams();
    if (groupSel.value) q.set("group", groupSel.value);
    if (stateSel.value) q.set("state", stateSel.value);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
  };
  if (fleetBody && groupSel && stateSel) {
    groupSel.addEventListener("change", filterAll);
    stateSel.addEventListener("change", filterAll);
  }

  const addGroupOptions = (row) => {
    if (!groupSel) return;
    const have = new Set([...groupSel.options].map((o) => o.value));
    for (const g of row.dataset.groups.trim().split(" ")) {
      if (g && !have.has(g)) groupSel.add(new Option(g, g));
    }
  };

  const placeRow = (tbody, row) => {
    const old = document.getElementById(row.id);
    if (old) { old.replaceWith(row); return; }
    const after = [...tbody.rows].find((r) => r.dataset.device > row.dataset.device);
    tbody.insertBefore(row, after || null);
  };

  // one handler per page ---------------------------------------------------------------------------
  const onFleet = (change) => {
    if (!fleetBody) return;
    for (const d of change.devices) {
      const row = fromHtml(d.html);
      placeRow(fleetBody, row);
      addGroupOptions(row);
      applyFilter(row);
      if (change.devices.length <= 50) row.classList.add("flash");  // a burst is not a highlight
    }
    if (change.devices.length) updateCounts();
  };

  const onDevice = (change) => {
    const me = body.dataset.device;
    const rowBody = document.querySelector("#device-row tbody");
    for (const d of change.devices) {
      if (d.device === me && rowBody) placeRow(rowBody, fromHtml(d.html));
    }
    const timeline = document.getElementById("timeline");
    for (const e of change.events) {
      if (e.device !== me || !timeline) continue;
      const item = fromHtml(e.html);
      if (!timeline.querySelector(`[data-key="${item.dataset.key}"]`)) timeline.prepend(item);
      document.getElementById("no-events").hidden = true;
    }
    if (change.bench.includes(me)) refresh(`${location.pathname}/charts`, "charts");
  };

  let pending = null;
  const refresh = (url, id) => {  // at most one fetch in flight per target; a burst becomes one fetch
    if (pending) { pending.again = true; return; }
    pending = { again: false };
    fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`${url}: HTTP ${r.status}`))))
      .then((html) => { document.getElementById(id).innerHTML = html; })
      .catch((err) => console.warn(err))
      .finally(() => {
        const again = pending.again;
        pending = null;
        if (again) setTimeout(() => refresh(url, id), 250);
      });
  };

  const onRollout = (change) => {
    if (change.devices.length || change.events.length) refresh(`${location.pathname}/live`, "live");
  };
  if (page === "rollout") {  // a wave can also time out, with no message from any device: look now and then
    setInterval(() => {
      const status = document.getElementById("ro-status");
      if (status && ["running", "rolling-back"].includes(status.textContent)) {
        refresh(`${location.pathname}/live`, "live");
      }
    }, 5000);
  }

  const handlers = { fleet: onFleet, device: onDevice, rollout: onRollout };
  const handle = handlers[page];

  // the stream -------------------------------------------------------------------------------------
  // from the version the page shows: what changed since it was rendered comes first
  const since = body.dataset.version;
  const source = new EventSource(since === undefined ? "/stream" : `/stream?since=${since}`);
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "live-status live"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting"; status.className = "live-status down"; });
  source.addEventListener("resync", () => location.reload());
  source.addEventListener("change", (msg) => {
    const change = JSON.parse(msg.data);
    if (handle) handle(change);
    body.dataset.updates = String(Number(body.dataset.updates || 0) + 1);
  });
  window.addEventListener("beforeunload", () => source.close());
})();
