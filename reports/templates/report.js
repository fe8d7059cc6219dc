// Progressive enhancement only: the page is complete without this script.
(function () {
  "use strict";

  // Sortable layer tables: a button per header cell; numbers sort by their exact value.
  function sortBy(table, column, type, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var descending = th.getAttribute("aria-sort") === "ascending";
    rows.sort(function (a, b) {
      var x = a.cells[column], y = b.cells[column], d;
      if (type === "num") {
        d = parseFloat(x.getAttribute("data-v")) - parseFloat(y.getAttribute("data-v"));
      } else {
        d = x.textContent.localeCompare(y.textContent);
      }
      if (d === 0) { d = parseFloat(a.cells[0].getAttribute("data-v")) - parseFloat(b.cells[0].getAttribute("data-v")); }
      return descending ? -d : d;
    });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(r); });
    body.appendChild(fragment);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, column) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      button.title = "sort by " + th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, column, th.getAttribute("data-type"), th); });
    });
  });

  // Following a link into a collapsed module opens it and every module around it.
  function reveal(id) {
    var target = id && document.getElementById(id);
    for (var el = target; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") { el.open = true; }
    }
    if (target) { target.scrollIntoView({block: "start"}); }
  }
  window.addEventListener("hashchange", function () { reveal(decodeURIComponent(location.hash.slice(1))); });
  if (location.hash) { reveal(decodeURIComponent(location.hash.slice(1))); }

  // Expand / collapse every module of one graph.
  document.querySelectorAll("section.architecture").forEach(function (section) {
    var tools = document.createElement("p");
    tools.className = "graph-tools";
    [["expand all modules", true], ["collapse all", false]].forEach(function (spec, i) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = spec[0];
      button.addEventListener("click", function () {
        section.querySelectorAll("details.graph-group").forEach(function (d) { d.open = spec[1]; });
      });
      if (i) { tools.appendChild(document.createTextNode(" ")); }
      tools.appendChild(button);
    });
    section.insertBefore(tools, section.querySelector(".graph-scroll"));
  });

  // Paper has no clicks: print the rule docs and the first level of every graph open.
  var printed = [];
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details:not([open])").forEach(function (d) {
      var depth = parseInt(d.getAttribute("data-depth") || "0", 10);
      if (depth <= 1) { d.open = true; printed.push(d); }
    });
  });
  window.addEventListener("afterprint", function () {
    printed.forEach(function (d) { d.open = false; });
    printed = [];
  });
})();
