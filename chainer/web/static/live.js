// Live updates for the recent-deliveries page: each new audit record (GET /audit/stream, signed in by the
// session cookie) re-fetches this page's rows with its filters and swaps them in. No library, no CDN.
(function () {
  "use strict";
  var table = document.querySelector("table[data-live]");
  var badge = document.getElementById("live");
  if (!table || !window.EventSource || location.search.indexOf("before=") !== -1) return;
  var waiting = null;
  function refresh() {
    waiting = null;
    fetch(location.href, { headers: { "X-Chainer-Partial": "rows" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) table.tBodies[0].outerHTML = html; });
  }
  var source = new EventSource("/audit/stream");
  source.onopen = function () { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = function () { badge.textContent = "reconnecting…"; badge.className = "live off"; };
  source.onmessage = function () { if (waiting === null) waiting = setTimeout(refresh, 250); };
})();
