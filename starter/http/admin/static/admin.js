// The admin pages work without this file; it only keeps a double click from sending a form
// twice (the server would act once anyway: every form carries an idempotency key).
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.method.toLowerCase() !== "post") return;
  window.setTimeout(function () {
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
  }, 0);
});
