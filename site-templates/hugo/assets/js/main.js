// pushdeploy Hugo demo: a tiny progressive enhancement.
document.addEventListener("DOMContentLoaded", function () {
  var status = document.getElementById("js-status");
  if (status) {
    status.textContent = "JavaScript loaded.";
  }
});
