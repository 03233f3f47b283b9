// Front-Channel Logout: give every RP's logout iframe a moment to load,
// then continue to the RP's post-logout page.
(function () {
  "use strict";
  var link = document.getElementById("logout-continue");
  if (!link) { return; }
  var frames = Array.prototype.slice.call(document.querySelectorAll("iframe.frontchannel"));
  var pending = frames.length;
  var done = false;
  function go() { if (!done) { done = true; window.location.assign(link.href); } }
  frames.forEach(function (frame) {
    frame.addEventListener("load", function () { pending -= 1; if (pending <= 0) { go(); } });
  });
  setTimeout(go, 3000);
})();
