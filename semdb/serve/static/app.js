// semdb serve: the search page. Plain JS, no build step, talks to the JSON API of app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["under", "after", "before", "within"];
let current = null;        // {q} | {like: id} | {image: Blob}
let seq = 0;               // drops answers of superseded searches

function filterParams() {
  const p = new URLSearchParams({ k: $("k").value });
  for (const name of FILTERS) {
    const v = $(name).value.trim();
    if (v) p.set(name, v);
  }
  return p;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

async function api(url, options) {
  const resp = await fetch(url, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error((body && body.error) || `HTTP ${resp.status}`);
  return body;
}

async function run(query, push = true) {
  current = query;
  const mine = ++seq;
  const p = filterParams();
  let url = "/api/search", options, what;
  if (query.q !== undefined) {
    p.set("q", query.q); url += "?" + p; what = `“${query.q}”`;
  } else if (query.like !== undefined) {
    url = `/api/similar/${query.like}?` + p; what = `more like item ${query.like}`;
  } else {
    url += "?" + p; what = "the uploaded image";
    const form = new FormData(); form.append("image", query.image, query.image.name || "query");
    options = { method: "POST", body: form };
  }
  if (push && query.image === undefined) {
    const state = new URLSearchParams(p);
    state.delete("k");
    if (query.like !== undefined) state.set("like", query.like);
    history.pushState(null, "", "?" + state);
  }
  setStatus(`Searching ${what}…`);
  try {
    const body = await api(url, options);
    if (mine !== seq) return;
    render(body.hits);
    setStatus(`${body.hits.length} results for ${what}` + (body.ms !== undefined ? ` (${Math.round(body.ms)} ms)` : ""));
  } catch (e) {
    if (mine !== seq) return;
    render([]);
    setStatus(e.message, true);
  }
}

function dirname(path) {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i + 1) : "/";
}

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = cls; b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function render(hits) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const hit of hits) {
    const card = document.createElement("div");
    card.className = "hit"; card.dataset.id = hit.id;
    const img = document.createElement("img");
    img.src = `/thumb/${hit.id}?size=256`; img.loading = "lazy"; img.alt = hit.path;
    img.addEventListener("click", () => view(hit));
    const meta = document.createElement("div"); meta.className = "meta";
    const score = document.createElement("span"); score.className = "score"; score.textContent = hit.score.toFixed(4);
    const path = document.createElement("span"); path.className = "path"; path.textContent = hit.path; path.title = hit.path;
    const actions = document.createElement("div"); actions.className = "actions";
    actions.append(button("More like this", "like", () => run({ like: hit.id })),
                   button("Folder", "folder", () => { $("under").value = dirname(hit.path); rerun(); }));
    meta.append(score, path, actions);
    card.append(img, meta);
    grid.append(card);
  }
}

function view(hit) {
  $("full").src = `/image/${hit.id}`; $("full").alt = hit.path;
  $("full-path").textContent = `${hit.path} · ${hit.score.toFixed(4)}`;
  $("full-like").onclick = () => { closeView(); run({ like: hit.id }); };
  $("viewer").hidden = false;
}

function closeView() { $("viewer").hidden = true; $("full").removeAttribute("src"); }

function rerun() { if (current) run(current); }

function fromLocation() {
  const p = new URLSearchParams(location.search);
  for (const name of FILTERS) $(name).value = p.get(name) || "";
  if (p.get("like")) return run({ like: p.get("like") }, false);
  if (p.get("q")) { $("q").value = p.get("q"); return run({ q: p.get("q") }, false); }
}

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("q").value.trim();
  if (q) run({ q }); else setStatus("Type something to search for.", true);
});
$("upload").addEventListener("change", () => { const f = $("upload").files[0]; if (f) run({ image: f }); $("upload").value = ""; });
$("filters").addEventListener("change", rerun);
$("filters").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); rerun(); } });
$("clear").addEventListener("click", () => { for (const name of FILTERS) $(name).value = ""; rerun(); });
$("full-close").addEventListener("click", closeView);
$("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) closeView(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeView(); });
window.addEventListener("popstate", fromLocation);

api("/api/info").then((info) => {
  const model = info.model ? info.model.name.replace(/^local-dir:.*\//, "local:") : "no model yet";
  const bits = info.bits_per_item ? `${info.bits_per_item} bits per image` : "uncompressed";
  $("info").textContent = `${info.items} items · ${model} · ${bits} · ${info.path}`;
}).catch(() => {});
fromLocation();
