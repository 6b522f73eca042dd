// DataWorkflows console: small progressive enhancement, no build step, no dependency.
// Pages work without it; with it, a run page follows the run live over the event stream
// (GET /api/v1/events/stream, EventSource) by re-fetching its server-rendered live part.
(function () {
  "use strict";
  var live = document.getElementById("run-live");
  if (!live || live.dataset.final === "true" || !window.EventSource) return;
  var id = live.dataset.execution;
  var note = document.getElementById("live-note");
  var cancel = document.getElementById("cancel");
  var RUN_ENDS = ["RunSucceeded", "RunFailed", "RunCancelled"];
  var TYPES = ["RunQueued", "RunStarted", "RunResumed", "StepStarted", "StepSucceeded",
    "StepFailed", "StepRetrying", "StepSkipped", "StepCancelled"].concat(RUN_ENDS);
  var pending = null, busy = false, again = false, ended = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch("/runs/" + encodeURIComponent(id) + "/live", { headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          // keep open what the reader opened
          var open = {};
          live.querySelectorAll("details[open]").forEach(function (d) { open[d.id] = true; });
          live.innerHTML = html;
          live.querySelectorAll("details").forEach(function (d) { if (open[d.id]) d.open = true; });
          var status = live.querySelector("#run-status");
          if (note && status) note.textContent = "Run status: " + status.textContent.trim();
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
        else if (ended) finish();
      });
  }
  function schedule() {
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(); }, 150);
  }
  function finish() {
    live.dataset.final = "true";
    if (cancel) cancel.disabled = true;
  }
  var source = new EventSource("/api/v1/events/stream?executionId=" + encodeURIComponent(id));
  TYPES.forEach(function (type) {
    source.addEventListener(type, function () {
      if (RUN_ENDS.indexOf(type) >= 0) { ended = true; source.close(); }
      schedule();
    });
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
