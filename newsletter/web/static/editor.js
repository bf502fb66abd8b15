// Editors' console: asks before destructive actions, and keeps send progress live.
(function () {
  "use strict";

  // Buttons with data-confirm (delete an item, cancel a send) ask first. Without
  // JavaScript they simply submit: the server acts on the POST either way.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.dataset ? button.dataset.confirm : "";
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // Live send progress: polls the JSON endpoint and updates the numbers in place.
  var box = document.getElementById("progress");
  if (!box || box.dataset.done === "true") { return; }
  var url = box.dataset.url;
  function show(data) {
    box.querySelectorAll("[data-key]").forEach(function (el) {
      var key = el.dataset.key;
      var value = data[key];
      if (key === "status") { value = (data.done ? "Done: " : "") + data.status; }
      el.textContent = String(value);
    });
    var bar = document.getElementById("progress-bar");
    if (bar) { bar.value = data.percent; }
  }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        show(data);
        // Reload once at the end, or when the send paused itself, so the controls
        // (and the reason it stopped) match the new state.
        if (data.done || data.status !== box.dataset.status) { window.location.reload(); }
        else { setTimeout(tick, 1000); }
      })
      .catch(function () { setTimeout(tick, 5000); });
  }
  setTimeout(tick, 1000);
})();
