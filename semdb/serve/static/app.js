// semdb serve: the page. Plain JS, no build step, talks to the JSON API of app.py.
//
// What the page shows is one state: {q} a text search, {like: id} more like a stored photo,
// {upload} more like an uploaded image, or else the collection (newest first, paged); with
// the filters (under, after, before, within) and k (results, or photos per page). The URL
// holds all of it but an upload (a file cannot live in a URL; history.state keeps a token for
// it while the page lives), so reload and back/forward show the same thing again.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["under", "after", "before", "within"];
const DEFAULT_K = "24";
const uploads = new Map(); // token -> {file, url}: the uploaded images of this page's history
let state = null;          // what is shown (or being fetched)
let shown = [];            // the cards of the grid, in order: the full view steps through them
let viewing = -1;          // index in `shown` of the photo in the full view, -1 when closed
let seq = 0;               // drops answers of superseded requests

function plural(n, word) { return `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`; }

function basename(path) { return path.slice(path.lastIndexOf("/") + 1) || path; }

// A time in a video as 01:23 (1:02:03 past an hour), as `semdb query` prints it.
function clock(seconds) {
  const s = Math.floor(seconds), two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${two(m)}:${two(s % 60)}`;
}

// A hit's place: its path, a video frame's with its time.
function place(card) { return card.time === undefined ? card.path : `${card.path} @ ${clock(card.time)}`; }

function dirname(path) {
  const i = path.lastIndexOf("/");
  return i > 0 ? path.slice(0, i + 1) : "/";
}

function day(seconds) {
  if (seconds === null || seconds === undefined) return "date unknown";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
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

// --- state <-> form, URL ------------------------------------------------------------------

function mode(s) {
  if (s.q) return "text";
  if (s.like) return "like";
  if (s.upload) return "upload";
  return "collection";
}

function formFilters() {
  const s = { k: $("k").value };
  for (const name of FILTERS) s[name] = $(name).value.trim();
  return s;
}

function showInForm(s) {
  for (const name of FILTERS) $(name).value = s[name] || "";
  countFilters();
  const k = s.k || DEFAULT_K;
  if (![...$("k").options].some((o) => o.value === k)) $("k").append(new Option(k, k));
  $("k").value = k;
  $("q").value = s.q || "";
}

function urlOf(s) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  if (s.like) p.set("like", s.like);
  for (const name of FILTERS) if (s[name]) p.set(name, s[name]);
  if (s.k && s.k !== DEFAULT_K) p.set("k", s.k);
  if (s.page > 1) p.set("page", s.page);
  const query = p.toString();
  return query ? "?" + query : location.pathname;
}

function fromLocation() {
  const p = new URLSearchParams(location.search);
  const s = { q: p.get("q") || "", like: p.get("like") || "", k: p.get("k") || DEFAULT_K };
  for (const name of FILTERS) s[name] = p.get(name) || "";
  s.page = Math.max(1, parseInt(p.get("page"), 10) || 1);
  const token = history.state && history.state.upload;
  if (token && uploads.has(token) && !s.q && !s.like) s.upload = token;
  return s;
}

// Show `s`: in the form, in the URL (a new history entry when `push`), then fetch it.
function go(s, push = true) {
  showInForm(s);
  const url = urlOf(s);
  const entry = s.upload ? { upload: s.upload } : null;
  const fromView = history.state && history.state.viewer;  // "More like this" in the full view: in its place
  if (push && !fromView) history.pushState(entry, "", url); else history.replaceState(entry, "", url);
  return run(s);
}

// The current state with the form's filters and k: undefined when nothing changed (an Enter
// then a change event of the same edit must not send the same request twice).
function withFilters() {
  const next = { ...state, ...formFilters(), page: 1 };
  return urlOf(next) === urlOf({ ...state, page: 1 }) && next.k === state.k ? undefined : next;
}

// --- fetching -----------------------------------------------------------------------------

function where(s) {
  let text = "";
  if (s.under) text += ` in ${s.under}`;
  if (s.after) text += ` taken from ${s.after}`;
  if (s.before) text += ` taken before ${s.before}`;
  return text;
}

async function run(s) {
  state = s;
  const mine = ++seq;
  closeView();
  showReference(s);
  $("pager").hidden = true;
  const p = new URLSearchParams({ k: s.k || DEFAULT_K });
  for (const name of FILTERS) if (s[name]) p.set(name, s[name]);
  const kind = mode(s);
  try {
    if (kind === "collection") {
      p.delete("k"); p.delete("within");
      const limit = parseInt(s.k, 10) || parseInt(DEFAULT_K, 10);
      p.set("offset", (s.page - 1) * limit); p.set("limit", limit);
      setStatus("Loading…");
      const body = await api("/api/items?" + p);
      if (mine !== seq) return;
      render(body.items.map((it) => ({ ...it, note: day(it.taken) })));
      showCollectionStatus(s, body, limit);
      window.scrollTo(0, 0);
      return;
    }
    let url = "/api/search?", options, what;
    if (kind === "text") {
      p.set("q", s.q); url += p; what = `for “${s.q}”`;
    } else if (kind === "like") {
      url = `/api/similar/${encodeURIComponent(s.like)}?` + p;
    } else {
      url += p;
      const { file } = uploads.get(s.upload);
      const form = new FormData(); form.append("image", file, file.name || "image");
      options = { method: "POST", body: form };
      what = `like ${file.name || "the uploaded image"} (uploaded)`;
    }
    setStatus("Searching…");
    const [body, ref] = await Promise.all([
      api(url, options),
      kind === "like" ? api(`/api/item/${encodeURIComponent(s.like)}`).catch(() => null) : null,
    ]);
    if (mine !== seq) return;
    if (kind === "like") {
      what = `like ${ref ? basename(ref.path) : "photo " + s.like}`;
      if (ref) setReference(thumb(ref.id, 96), `More like ${basename(ref.path)}`, ref.path);
    }
    render(body.hits.map((h) => ({ ...h, note: h.score.toFixed(4) })));
    const ms = body.ms !== undefined ? ` (${Math.round(body.ms)} ms)` : "";
    setStatus(`${plural(body.hits.length, "result")} ${what}${where(s)}${ms}`);
    window.scrollTo(0, 0);  // new results start at the top, with their reference image
  } catch (e) {
    if (mine !== seq) return;
    render([]);
    setStatus(e.message, true);
  }
}

// What a listing holds, photos and video frames told apart: "12 photos and 40 frames of 2 videos".
function kinds({ total, photos = total, frames = 0, videos = 0 }) {
  const clips = `${plural(frames, "frame")} of ${plural(videos, "video")}`;
  if (!frames) return plural(photos, "photo");
  return photos ? `${plural(photos, "photo")} and ${clips}` : clips;
}

function showCollectionStatus(s, body, limit) {
  const filtered = s.under || s.after || s.before;
  const { total, items } = body;
  if (total === 0) {
    setStatus(filtered ? `No photos${where(s)}.` : "No photos in this store yet: add some with semdb ingest.");
    return;
  }
  const pages = Math.max(1, Math.ceil(total / limit));
  let text = `${kinds(body)}${where(s)}, newest first`;
  if (pages > 1) {
    const first = (s.page - 1) * limit + 1;
    text += items.length ? ` · ${first}–${first + items.length - 1} shown` : ` · none on page ${s.page}`;
    $("page-info").textContent = `Page ${s.page} of ${pages}`;
    $("newer").disabled = s.page <= 1;
    $("older").disabled = s.page >= pages;
    $("pager").hidden = false;
  }
  setStatus(text);
}

// --- the reference image (more like this, upload) ----------------------------------------

function showReference(s) {
  const kind = mode(s);
  if (kind === "upload") {
    const { file, url } = uploads.get(s.upload);
    setReference(url, `More like ${file.name || "the uploaded image"} (uploaded)`, file.name || "uploaded image");
  } else { // "like": set again when its item is known (run)
    $("reference").hidden = true;
    $("ref-box").replaceChildren();
  }
}

function setReference(src, caption, alt) {
  const box = $("ref-box");
  box.replaceChildren(picture(src, alt));
  $("ref-caption").textContent = caption;
  $("reference").hidden = false;
}

// --- the grid -----------------------------------------------------------------------------

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = cls; b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function missing() {
  const box = document.createElement("div");
  box.className = "missing"; box.textContent = "file missing";
  return box;
}

// An <img> that becomes a "file missing" box when the server has no picture for it (the
// item's file was deleted or cannot be read: a 404 or 422 JSON answer, no broken icon).
function picture(src, alt) {
  const img = document.createElement("img");
  img.alt = alt; img.src = src; img.loading = "lazy"; img.draggable = false;
  img.addEventListener("error", () => {
    const box = missing(); box.title = alt;
    img.replaceWith(box);
  });
  return img;
}

// A thumbnail's URL: the centre square of the item, `side` CSS pixels wide, as many device
// pixels as the screen has (a phone's 3x screen gets 3x the pixels), in steps of 32.
function thumb(id, side) {
  const px = Math.min(1024, Math.max(64, Math.ceil((side * (window.devicePixelRatio || 1)) / 32) * 32));
  return `/thumb/${id}?size=${px}&square=1`;
}

// The width of the grid's columns now (the tiles are square).
function tileSide() {
  return parseFloat(getComputedStyle($("grid")).gridTemplateColumns) || 180;
}

function render(cards) {
  shown = cards;
  const grid = $("grid");
  grid.replaceChildren();
  const side = tileSide();
  cards.forEach((card, i) => {
    const el = document.createElement("div");
    el.className = "hit"; el.dataset.id = card.id; el.title = place(card);
    el.addEventListener("click", (e) => { if (!e.target.closest("button")) view(i); });
    const meta = document.createElement("div"); meta.className = "meta";
    const note = document.createElement("span"); note.className = "note"; note.textContent = card.note;
    if (card.score !== undefined) { note.classList.add("score"); note.dataset.score = card.score; }
    const path = document.createElement("span"); path.className = "path"; path.textContent = place(card);
    const row = document.createElement("div"); row.className = "row";
    row.append(button("More like this", "like", () => moreLike(card)),
               button("Folder", "folder", () => showFolder(dirname(card.path))));
    meta.append(note, path, row);
    el.append(picture(thumb(card.id, side), card.path), meta);
    if (card.time !== undefined) {  // a video frame: a badge with its time in the video
      const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = clock(card.time);
      el.append(badge);
    }
    grid.append(el);
  });
}

function moreLike(card) { go({ like: String(card.id), ...formFilters(), page: 1 }); }

// "Folder": that folder's photos, newest first (not the current search narrowed to it).
function showFolder(folder) {
  go({ ...formFilters(), under: folder, page: 1 });
}

// --- the full view ------------------------------------------------------------------------
// It fills the screen. Swipe (or drag) left/right for the next/previous item; a tap shows or
// hides its bars; arrow keys and Esc on a keyboard.

function view(i) {
  if (i < 0 || i >= shown.length) return;
  const opening = viewing < 0;
  viewing = i;
  const card = shown[i];
  const full = $("full"), video = $("full-video"), isVideo = card.time !== undefined;
  $("full-missing").hidden = true;
  full.hidden = isVideo; video.hidden = !isVideo;
  $("viewer").classList.toggle("video", isVideo);
  if (!isVideo) {
    full.src = `/image/${card.id}`; full.alt = card.path; video.pause(); video.removeAttribute("src");
  } else {  // a video frame: the video plays from that moment (the server answers byte ranges)
    full.removeAttribute("src"); video.src = `/video/${card.id}#t=${card.time}`; video.play().catch(() => {});
  }
  $("full-dir").textContent = dirname(card.path);  // (not on a phone: the name and date are what fit)
  $("full-name").textContent = `${basename(place(card))} · ${card.note}`;
  $("full-path").title = card.path;
  $("full-count").textContent = `${i + 1} of ${shown.length}`;
  $("full-prev").disabled = i === 0;
  $("full-next").disabled = i === shown.length - 1;
  if (opening) {  // a history entry of its own: a phone's Back closes the full view, not the page
    $("viewer").classList.remove("bare");
    history.pushState({ ...history.state, viewer: true }, "", location.href);
  }
  $("viewer").hidden = false;
  document.body.classList.add("viewing");
}

function closeView() {
  if ($("viewer").hidden) return;
  $("viewer").hidden = true; $("full").removeAttribute("src"); viewing = -1;
  $("full-video").pause(); $("full-video").removeAttribute("src");
  document.body.classList.remove("viewing");
}

let press = null;  // where a finger (or the mouse) went down on the full view
$("viewer").addEventListener("pointerdown", (e) => {
  press = e.target.closest("button") ? null : { x: e.clientX, y: e.clientY, id: e.pointerId };
});
$("viewer").addEventListener("pointercancel", () => { press = null; });
$("viewer").addEventListener("pointerup", (e) => {
  if (!press || e.pointerId !== press.id) return;
  const dx = e.clientX - press.x, dy = e.clientY - press.y;
  press = null;
  if (Math.abs(dx) > 40 && Math.abs(dx) > 1.5 * Math.abs(dy)) view(viewing + (dx < 0 ? 1 : -1));
  else if (Math.hypot(dx, dy) < 10 && e.target !== $("full-video")) $("viewer").classList.toggle("bare");
});
$("full").addEventListener("error", () => {
  if (!$("full").getAttribute("src")) return;
  $("full").hidden = true; $("full-missing").hidden = false;
});
$("full-prev").addEventListener("click", () => view(viewing - 1));
$("full-next").addEventListener("click", () => view(viewing + 1));
$("full-like").addEventListener("click", () => { if (shown[viewing]) moreLike(shown[viewing]); });
$("full-folder").addEventListener("click", () => { if (shown[viewing]) showFolder(dirname(shown[viewing].path)); });
// Closed by its button or Esc: its history entry goes too (the popstate that follows is ours).
let leaving = false;
function leaveView() {
  closeView();
  if (history.state && history.state.viewer) { leaving = true; history.back(); }
}
$("full-close").addEventListener("click", leaveView);
document.addEventListener("keydown", (e) => {
  if ($("viewer").hidden) return;
  if (e.key === "Escape") leaveView();
  else if (e.key === "ArrowLeft") { e.preventDefault(); view(viewing - 1); }
  else if (e.key === "ArrowRight") { e.preventDefault(); view(viewing + 1); }
});

// --- the controls -------------------------------------------------------------------------

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("q").value.trim();
  foldFilters(true);
  $("q").blur();  // a phone's keyboard goes away
  go({ ...formFilters(), q, page: 1 }); // an empty search: the collection
});
// On a small screen the filters and the image search fold behind one button, which says how
// many filters are set.
function foldFilters(folded) {
  document.querySelector("header").classList.toggle("open", !folded);
  $("more-toggle").setAttribute("aria-expanded", String(!folded));
}
function countFilters() {
  const set = FILTERS.filter((name) => $(name).value.trim()).length;
  $("more-toggle").textContent = set ? `Filters (${set})` : "Filters";
}
$("more-toggle").addEventListener("click", () => foldFilters(document.querySelector("header").classList.contains("open")));
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  const token = `u${Date.now()}${uploads.size}`;
  uploads.set(token, { file, url: URL.createObjectURL(file) });
  foldFilters(true);
  go({ ...formFilters(), upload: token, page: 1 });
});
function filtersChanged() { const next = withFilters(); if (next) go(next); }
$("filters").addEventListener("change", filtersChanged);
$("filters").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); filtersChanged(); } });
$("clear").addEventListener("click", () => { for (const name of FILTERS) $(name).value = ""; filtersChanged(); });
$("ref-clear").addEventListener("click", () => go({ ...formFilters(), page: 1 }));
$("newer").addEventListener("click", () => go({ ...state, page: state.page - 1 }));
$("older").addEventListener("click", () => go({ ...state, page: state.page + 1 }));
window.addEventListener("popstate", () => {
  if (leaving) { leaving = false; return; }
  if (!$("viewer").hidden) { closeView(); return; }  // Back from the full view: the results as they were
  go(fromLocation(), false);
});
history.scrollRestoration = "manual";  // each new page of results starts at the top
if (matchMedia("(min-width: 701px)").matches) {  // not on a phone: its keyboard would cover the page, the hint not fit
  $("q").placeholder = "Search photos: a red bicycle, 2:cat + dog - car";
  $("q").focus();
}

api("/api/info").then((info) => {
  const model = info.model ? info.model.name.replace(/^local-dir:.*\//, "local:") : "no model yet";
  const bits = info.bits_per_item ? `${info.bits_per_item} bits per image` : "uncompressed";
  $("info").textContent = `${plural(info.items, "item")} · ${model} · ${bits} · ${info.path}`;
}).catch(() => {});
go(fromLocation(), false);
