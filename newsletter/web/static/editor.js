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

  // Drag and drop to reorder the items. The Up and Down buttons stay for the
  // keyboard and for browsers without JavaScript; this posts the same change.
  var list = document.getElementById("items");
  if (list && list.dataset.editable === "true") {
    var dragged = null;
    var token = document.querySelector("input[name=csrf_token]");
    list.querySelectorAll("li[data-item-id]").forEach(function (li) {
      li.setAttribute("draggable", "true");
      li.addEventListener("dragstart", function (event) {
        if (event.target.closest("form, details, input, textarea, button, a")) { return; }
        dragged = li;
        li.classList.add("dragging");
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", li.dataset.itemId);
      });
      li.addEventListener("dragend", function () {
        li.classList.remove("dragging");
        dragged = null;
      });
      li.addEventListener("dragover", function (event) {
        if (!dragged || dragged === li) { return; }
        event.preventDefault();
        var box = li.getBoundingClientRect();
        var after = event.clientY > box.top + box.height / 2;
        list.insertBefore(dragged, after ? li.nextSibling : li);
      });
      li.addEventListener("drop", function (event) { event.preventDefault(); });
    });
    list.addEventListener("drop", function (event) {
      event.preventDefault();
      var order = Array.prototype.map.call(list.querySelectorAll("li[data-item-id]"),
        function (el) { return el.dataset.itemId; });
      var body = new URLSearchParams();
      body.set("order", order.join(","));
      body.set("csrf_token", token ? token.value : "");
      list.classList.add("saving");
      fetch(list.dataset.reorderUrl, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { window.location.assign(r.url || window.location.href); })
        .catch(function () { window.location.reload(); });
    });
  }

  // Live preview of the Markdown editor: the server parses what is typed (the same
  // parser as "Create draft") and answers the items or the first error with its line.
  var preview = document.getElementById("md-preview");
  var source = document.querySelector("textarea[name=text]");
  if (preview && source) {
    var statusLine = document.getElementById("md-preview-status");
    var listEl = document.getElementById("md-preview-items");
    var csrf = document.querySelector("input[name=csrf_token]");
    var timer = null;
    var show = function (data) {
      listEl.textContent = "";
      if (!data.ok) {
        statusLine.textContent = data.error;
        statusLine.className = "alert";
        return;
      }
      statusLine.className = "hint";
      statusLine.textContent = data.title + ": " + data.items.length +
        (data.items.length === 1 ? " item" : " items");
      data.items.forEach(function (item) {
        var li = document.createElement("li");
        var head = document.createElement("strong");
        head.textContent = item.headline;
        li.appendChild(head);
        item.topics.forEach(function (name) {
          var tag = document.createElement("span");
          tag.className = "tag";
          tag.textContent = name;
          li.appendChild(tag);
        });
        if (item.pinned) {
          var pin = document.createElement("span");
          pin.className = "badge pinned";
          pin.textContent = "pinned";
          li.appendChild(pin);
        }
        var body = document.createElement("p");
        body.textContent = item.excerpt;
        li.appendChild(body);
        listEl.appendChild(li);
      });
    };
    var refresh = function () {
      var body = new URLSearchParams();
      body.set("text", source.value);
      body.set("csrf_token", csrf ? csrf.value : "");
      fetch(preview.dataset.url, { method: "POST", body: body, credentials: "same-origin",
                                   headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(show)
        .catch(function () { statusLine.textContent = "Preview unavailable right now."; });
    };
    source.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 400);
    });
    refresh();
  }

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
