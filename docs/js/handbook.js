/* The handbook's own script (offline, no library): a copy button on every code block, and the
   "scroll sideways" cue shown above a table or diagram only while it is wider than the screen.
   The buttons and scroll containers are in the page's markup (posthog_compose/documents/layout.py). */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function markWide() {
    document.querySelectorAll(".wide").forEach(function (wide) {
      var scroller = wide.querySelector(".scroll");
      wide.classList.toggle("scrolls", !!scroller && scroller.scrollWidth > scroller.clientWidth + 1);
    });
  }

  function fallbackCopy(text) {
    // Clipboard API needs a secure context; a handbook served over plain http on a LAN has none.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    document.body.removeChild(area);
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".copy-button") : null;
    if (!button) { return; }
    var code = button.parentElement.querySelector("pre");
    copy(code ? code.innerText.replace(/\n$/, "") : "").then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Select and copy";
    }).then(function () {
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });

  document.addEventListener("DOMContentLoaded", markWide);
  window.addEventListener("load", markWide);
  window.addEventListener("resize", markWide);
}());
