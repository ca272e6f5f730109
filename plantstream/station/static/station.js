// plantstream station: live parts of the pages, without a build step.
// [data-sse]: an EventSource whose "machines" events replace the element's HTML (the line view);
// when the browser has no EventSource, or the stream fails for good, [data-poll] is fetched instead.
// [data-poll] without [data-sse]: fetched every 2 s (a stop list, a stop being restated).
// A 401 or an "expired" event (the session ended) reloads the page, which goes to sign-in.
// [data-filter]: a search box that hides the reason buttons not matching what is typed.
(function () {
  "use strict";
  // The session ended (401, or the stream's "expired" event): reload the page, which the station
  // answers with the sign-in page and why; never keep showing a live view nobody is signed in to.
  function signedOut() { window.location.reload(); }
  function poll(el, every) {
    var url = el.getAttribute("data-poll");
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.ok) { return r.text(); }
        if (r.status === 401) { signedOut(); }
        throw new Error(r.status);
      }).then(function (html) { if (el.innerHTML !== html) { el.innerHTML = html; } })
        .catch(function () {}).then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  document.querySelectorAll("[data-sse]").forEach(function (el) {
    if (!window.EventSource) { poll(el, 2000); return; }
    var es = new EventSource(el.getAttribute("data-sse"));
    es.addEventListener("machines", function (ev) { el.innerHTML = ev.data; el.setAttribute("data-updated", Date.now()); });
    es.addEventListener("expired", function () { es.close(); signedOut(); });
    es.onerror = function () { if (es.readyState === EventSource.CLOSED) { poll(el, 2000); } };
  });
  document.querySelectorAll("[data-poll]:not([data-sse])").forEach(function (el) { poll(el, 2000); });
  document.querySelectorAll("[data-filter]").forEach(function (box) {
    var sel = box.getAttribute("data-filter");
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase();
      document.querySelectorAll(sel).forEach(function (b) {
        b.hidden = q !== "" && (b.getAttribute("data-text") || "").toLowerCase().indexOf(q) < 0;
      });
      document.querySelectorAll(".category").forEach(function (f) {
        f.hidden = f.querySelectorAll(".choice:not([hidden])").length === 0;
      });
    });
  });
})();
