// semdb serve --watch: what the server's folder watcher is doing, and new photos in the
// collection as they are committed, without a reload. Polls GET /api/status (once only when the
// server watches nothing): a new store generation while the collection is shown (and no photo is
// open) shows it again. Uses app.js's globals: $, plural, state, mode(), run().
"use strict";

(() => {
  const PERIOD_MS = 2000; // between two polls
  const note = document.createElement("p");
  note.id = "indexing";
  note.setAttribute("role", "status");
  note.hidden = true;
  $("status").before(note);
  let generation = null;
  let stale = false; // the store changed while the collection could not be shown again

  function show(s) {
    note.hidden = !s.indexing;
    if (s.indexing) {
      note.textContent = s.pending ? `Indexing ${plural(s.pending, "new photo")}…` : "Checking the watched folders…";
    }
    if (generation !== null && s.generation !== generation) stale = true;
    generation = s.generation;
    if (stale && state && mode(state) === "collection" && $("viewer").hidden) {
      stale = false;
      run(state);
    }
  }

  async function poll() {
    let again = true;
    try {
      if (!document.hidden) {
        const response = await fetch("/api/status", { cache: "no-store" });
        if (response.ok) {
          const s = await response.json();
          again = s.watching;
          show(s);
        }
      }
    } catch (e) {
      // the server stopped or restarts: try again later
    }
    if (again) setTimeout(poll, PERIOD_MS);
  }

  poll();
})();
