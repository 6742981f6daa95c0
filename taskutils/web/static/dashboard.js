// taskutils dashboard: asks before sending a form marked data-confirm (purge, cancel, remove).
// It is a file, not an inline script, so that the Content-Security-Policy can forbid inline code.
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
