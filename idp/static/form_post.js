// OAuth 2.0 Form Post Response Mode: submit the response to the RP at once.
// The page carries a Continue button for browsers without JavaScript.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  document.getElementById("form-post").submit();
});
