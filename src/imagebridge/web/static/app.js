/* imagebridge staff page: no build step, no framework.
 * 1. A form that is submitted disables its buttons (a double click sends one request).
 * 2. Import jobs on the page follow their progress through server-sent events and
 *    reload the page once when the job settles, to show where the study is now. */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitted === "true") {
      event.preventDefault();
      return;
    }
    form.dataset.submitted = "true";
    var buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach(function (button) {
      // Disable after this tick, so the button's own value is still submitted.
      window.setTimeout(function () { button.disabled = true; }, 0);
      if (form.dataset.busy) { button.setAttribute("aria-busy", "true"); }
    });
    if (form.dataset.busy) {
      var status = document.createElement("p");
      status.className = "busy";
      status.setAttribute("role", "status");
      status.textContent = form.dataset.busy;
      form.appendChild(status);
    }
  });

  // The browser restores a page from its cache on "back": enable its forms again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-submitted]").forEach(function (form) {
      delete form.dataset.submitted;
      form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      form.querySelectorAll(".busy").forEach(function (p) { p.remove(); });
    });
  });

  function follow(card) {
    if (!window.EventSource || card.dataset.settled === "true") { return; }
    var source = new EventSource(card.dataset.events);
    function field(name) { return card.querySelector("[data-field=" + name + "]"); }
    source.addEventListener("progress", function (message) {
      var p = JSON.parse(message.data);
      field("bar").value = p.percent;
      field("bar").textContent = p.percent + "%";
      field("label").textContent = p.label;
      field("label").className = "state status-" + p.state;
      field("counts").textContent = p.done + " of " + p.total + " stored" +
        (p.errors ? ", " + p.errors + " failed" : "");
      field("message").textContent = p.message;
      field("verification").textContent = p.verification;
      card.dataset.state = p.state;
      if (p.settled) {
        source.close();
        window.location.reload();  // the server renders the final state (data-settled=true)
      }
    });
  }

  document.querySelectorAll("[data-events]").forEach(follow);
})();
