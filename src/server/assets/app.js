// Lookout status pages: progressive enhancement only. The pages are
// complete without this script; it adds a live text filter, keeps
// relative times current, and refreshes the live parts of the page every
// 30 seconds without a full reload. It never logs to the console.
(function () {
  "use strict";

  var REFRESH_MS = 30000;
  var TICK_MS = 15000;
  var busy = false;

  function span(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) { return d + "d " + h + "h"; }
    if (h > 0) { return h + "h " + m + "m"; }
    if (m > 0) { return m + "m " + (s % 60) + "s"; }
    return s + "s";
  }

  function updateTimes() {
    var now = Date.now();
    var els = document.querySelectorAll("time.rel[datetime]");
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute("datetime"));
      if (!isNaN(t)) { els[i].textContent = span((now - t) / 1000) + " ago"; }
    }
  }

  function applyFilter() {
    var box = document.getElementById("filter");
    if (!box) { return; }
    var text = box.value.trim().toLowerCase();
    var cards = document.querySelectorAll("article.probe");
    for (var i = 0; i < cards.length; i++) {
      var c = cards[i];
      var target = c.querySelector(".target");
      var hay = [c.getAttribute("data-probe") || "", c.getAttribute("data-labels") || "",
        target ? target.textContent : ""].join(" ").toLowerCase();
      c.hidden = text !== "" && hay.indexOf(text) < 0;
    }
    var groups = document.querySelectorAll("#probes > section.group");
    for (var j = 0; j < groups.length; j++) {
      groups[j].hidden = groups[j].querySelector("article.probe:not([hidden])") === null;
    }
  }

  function replaceLiveParts(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.querySelectorAll("[data-refresh][id]");
    for (var i = 0; i < fresh.length; i++) {
      var old = document.getElementById(fresh[i].id);
      if (old) { old.replaceWith(document.importNode(fresh[i], true)); }
    }
    var article = doc.querySelector("article.probe-detail");
    var mine = document.querySelector("article.probe-detail");
    if (article && mine) { mine.setAttribute("data-state", article.getAttribute("data-state") || ""); }
    applyFilter();
    updateTimes();
  }

  function refresh() {
    if (busy || document.hidden || !window.fetch) { return; }
    busy = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (html) {
        if (html !== null) { replaceLiveParts(html); }
        document.documentElement.removeAttribute("data-stale");
      })
      .catch(function () { document.documentElement.setAttribute("data-stale", "true"); })
      .then(function () { busy = false; });
  }

  function start() {
    var box = document.getElementById("filter");
    if (box) { box.addEventListener("input", applyFilter); }
    applyFilter();
    updateTimes();
    window.setInterval(updateTimes, TICK_MS);
    window.setInterval(refresh, REFRESH_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { refresh(); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
