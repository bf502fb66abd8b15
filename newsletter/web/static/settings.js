// Settings page: the email preview follows the form as it is typed. The form is
// posted into a sandboxed frame (as the Preview button does without JavaScript),
// debounced; nothing is saved until "Save settings".
//
// Each preview loads in a fresh, hidden frame that replaces the shown one when it has
// loaded: no flash of an empty frame, and no history entry per keystroke (reloading
// one frame would add one each time, and Back would step through the previews).
(function () {
  "use strict";
  var form = document.getElementById("settings-form");
  var frame = document.getElementById("settings-preview");
  var button = document.getElementById("btn-preview");
  if (!form || !frame || !button) { return; }
  var state = document.getElementById("preview-state");
  var logo = document.getElementById("logo");
  var text = document.getElementById("accent_color");
  var picker = document.getElementById("accent_picker");
  var timer = 0;
  var latest = 0;

  function say(message) { if (state) { state.textContent = message; } }

  function preview() {
    clearTimeout(timer);
    latest += 1;
    var mine = latest;
    var next = document.createElement("iframe");
    next.name = "settings-preview-" + mine;
    next.className = frame.className;
    next.title = frame.title;
    next.setAttribute("sandbox", "");
    next.hidden = true;
    frame.insertAdjacentElement("afterend", next);
    var sent = false;
    next.addEventListener("load", function () {
      if (!sent) { return; }  // the empty document a new frame starts with
      if (mine !== latest) { next.remove(); return; }  // a newer preview is on its way
      frame.remove();
      next.id = "settings-preview";
      next.hidden = false;
      frame = next;
      say("");
    });
    var action = form.getAttribute("action");
    var target = form.getAttribute("target");
    form.setAttribute("action", button.getAttribute("formaction"));
    form.setAttribute("target", next.name);
    sent = true;
    form.submit();  // no submit event and no validation: a half-typed value is fine here
    form.setAttribute("action", action);
    if (target) { form.setAttribute("target", target); } else { form.removeAttribute("target"); }
    say("updating…");
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(preview, 400);
  }

  // Too big a logo is refused here at once rather than uploaded on every keystroke.
  function logoTooBig() {
    var max = Number(logo.dataset.maxBytes || 0);
    var file = logo.files && logo.files[0];
    var old = document.getElementById("logo-size-error");
    if (old) { old.remove(); }
    if (!file || !max || file.size <= max) { return false; }
    var p = document.createElement("p");
    p.className = "field-error";
    p.id = "logo-size-error";
    p.setAttribute("role", "alert");
    p.textContent = "The file is " + Math.round(file.size / 1024) + " KB; a logo can be at most " +
      Math.round(max / 1024) + " KB. Export it smaller.";
    logo.insertAdjacentElement("afterend", p);
    logo.value = "";
    return true;
  }

  form.addEventListener("input", function (event) {
    if (event.target === picker || event.target === logo) { return; }
    later();
  });
  form.addEventListener("change", function (event) {
    var el = event.target;
    if (el === logo && logoTooBig()) { return; }
    if (el === logo || el.type === "checkbox" || el.tagName === "SELECT") { preview(); }
  });
  form.addEventListener("submit", function (event) {
    if (event.submitter === button) { event.preventDefault(); preview(); }
  });

  // A colour picker beside the hex field (the field stays the source of truth).
  if (picker && text) {
    picker.hidden = false;
    if (/^#[0-9a-fA-F]{6}$/.test(text.value)) { picker.value = text.value.toLowerCase(); }
    picker.addEventListener("input", function () {
      text.value = picker.value;
      later();
    });
    text.addEventListener("input", function () {
      if (/^#[0-9a-fA-F]{6}$/.test(text.value)) { picker.value = text.value.toLowerCase(); }
    });
  }
  // A form shown again with errors holds unsaved values: preview those, not the saved ones.
  if (form.dataset.typed === "true") { preview(); }
})();
