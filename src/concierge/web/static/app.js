// Small helpers around htmx: keep chat logs tidy, scrolled and keyboard-friendly. No framework, no build.
(function () {
  "use strict";

  function scrollToEnd(log) { log.scrollTop = log.scrollHeight; }

  function tidySupportLog(log) {
    // A poll and a reply can race and return the same message: keep the first copy of each id.
    var seen = {};
    log.querySelectorAll(".msg[data-id]").forEach(function (el) {
      var id = el.getAttribute("data-id");
      if (seen[id]) { el.remove(); } else { seen[id] = true; }
    });
    // Yes / No belongs only to the latest question: drop any box that has messages after it.
    log.querySelectorAll(".confirm-box").forEach(function (box) {
      var next = box.nextElementSibling;
      while (next && !next.classList.contains("msg")) { next = next.nextElementSibling; }
      if (next) { box.remove(); }
    });
  }

  var atBottom = {};
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.classList && target.classList.contains("console-log")) {
      atBottom.console = target.scrollHeight - target.scrollTop - target.clientHeight < 40;
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target) { return; }
    if (target.id === "support-log" || target.id === "shop-log") {
      if (target.id === "support-log") {
        tidySupportLog(target);
        // Answering Yes / No removes the buttons that had focus: bring the keyboard back to the box.
        var active = document.activeElement;
        if (!active || active === document.body || !active.isConnected) {
          var box = document.getElementById("support-message");
          if (box) { box.focus(); }
        }
      }
      scrollToEnd(target);
    }
    if (target.classList && target.classList.contains("console-log") && atBottom.console) {
      scrollToEnd(target);
    }
    if (target.id === "transcript") {
      var log = target.querySelector(".console-log");
      if (log) { scrollToEnd(log); }
      var source = event.detail.requestConfig && event.detail.requestConfig.elt;
      var reply = target.querySelector("#staff-message");
      // After an action keep the keyboard where the work continues: the reply box, else the pane.
      if (reply && source && source.tagName === "FORM") { reply.focus(); } else { target.focus(); }
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (!event.detail.successful || !elt || elt.tagName !== "FORM") { return; }
    var log = document.getElementById("support-log");
    if ((log && log.contains(elt)) || elt.id === "support-form" || elt.closest(".actions-row")) {
      var input = document.getElementById("support-message");
      if (input) {
        if (elt.id === "support-form") { input.value = ""; }
        input.focus();
      }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".log").forEach(scrollToEnd);
  });
})();
