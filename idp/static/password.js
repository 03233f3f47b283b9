// Live password strength: asks the server, which applies the real policy
// (length, blocklist, e-mail and name, strength estimate). Submitting still
// works without this; the server checks again.
(function () {
  "use strict";
  var input = document.getElementById("password");
  var meter = document.getElementById("password-meter");
  if (!input || !meter || !window.fetch) { return; }
  var bar = meter.querySelector(".meter-bar");
  var text = meter.querySelector(".meter-text");
  var email = document.getElementById("email");
  var names = ["given_name", "family_name"].map(function (id) { return document.getElementById(id); });
  var timer = null;
  var latest = 0;

  function show(result) {
    meter.hidden = false;
    bar.setAttribute("data-score", String(result.score));
    text.textContent = result.messages.length ? result.messages[0] : (meter.getAttribute("data-ok") || "\u2713");
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    if (!input.value) { meter.hidden = true; return; }
    timer = setTimeout(function () {
      var ticket = ++latest;
      fetch(input.getAttribute("data-strength-url"), {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": input.getAttribute("data-csrf") },
        body: JSON.stringify({
          password: input.value, email: email ? email.value : "",
          names: names.filter(Boolean).map(function (n) { return n.value; })
        })
      }).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (result) { if (result && ticket === latest) { show(result); } })
        .catch(function () { /* the server checks on submit anyway */ });
    }, 250);
  });
})();
