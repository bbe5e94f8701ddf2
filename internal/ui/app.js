// Keeps the page current: the server sends the whole rendered view (already
// escaped by html/template) whenever the datastore changes, and the browser
// reconnects by itself when the stream breaks.
"use strict";
(function () {
  const live = document.getElementById("live");
  const view = document.getElementById("view");
  function show(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }
  // The stream draws the matrix for the port this page was opened with.
  const events = new EventSource("events" + location.search);
  events.addEventListener("view", function (e) {
    view.innerHTML = e.data;
    show("live", "live, updated " + new Date().toLocaleTimeString());
  });
  events.onerror = function () {
    show("lost", "connection lost; reconnecting\u2026");
  };
})();
