// Instant filtering for the agreement chooser. The page works without this:
// the search form submits to the server, which does the same search.
(function () {
  "use strict";
  var input = document.getElementById("agreement-q");
  var list = document.getElementById("agreement-list");
  if (!input || !list || !window.fetch) { return; }
  var url = input.getAttribute("data-search-url");
  var timer = null;
  var latest = 0;

  function render(items) {
    // The "showing the most recent" hint describes the unfiltered list only.
    var hint = document.querySelector(".hint");
    if (hint) { hint.hidden = input.value.length > 0; }
    list.textContent = "";
    if (!items.length) {
      list.appendChild(document.getElementById("agreement-empty-template").content.cloneNode(true));
      return;
    }
    items.forEach(function (item) {
      var li = document.createElement("li");
      var button = document.createElement("button");
      button.type = "submit"; button.name = "agreement"; button.value = item.number; button.className = "agreement";
      var name = document.createElement("span"); name.className = "agreement-name"; name.textContent = item.name;
      var meta = document.createElement("span"); meta.className = "agreement-meta";
      meta.textContent = item.number + " \u00b7 " + item.role;
      button.appendChild(name); button.appendChild(meta); li.appendChild(button); list.appendChild(li);
    });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var ticket = ++latest;
      fetch(url + "?q=" + encodeURIComponent(input.value), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && ticket === latest) { render(data.items); } })
        .catch(function () { /* the server-side search still works */ });
    }, 150);
  });
})();
