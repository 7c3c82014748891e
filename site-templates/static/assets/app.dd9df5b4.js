// pushdeploy static demo: mark the current nav link and show the build stamp.
document.addEventListener("DOMContentLoaded", function () {
  var here = location.pathname.replace(/index\.html$/, "");
  document.querySelectorAll("nav a").forEach(function (a) {
    if (a.getAttribute("href") === here) a.setAttribute("aria-current", "page");
  });
  var stamp = document.getElementById("js-status");
  if (stamp) stamp.textContent = "JavaScript loaded.";
});
