// Alert explorer for the churn report: filter, search, sort and a detail panel per customer.
// Plain DOM code, no libraries, no network. Data comes from the JSON block #alert-data and is only ever
// inserted with textContent, never as HTML. State lives in the URL hash (e.g. #playbook=Win-back&customer=C1),
// so a filtered view can be bookmarked, shared, or opened by a headless browser in a test.
(function () {
  "use strict";
  var table = document.getElementById("alert-table");
  if (!table) { return; }
  var data = JSON.parse(document.getElementById("alert-data").textContent);
  var byId = {};
  data.forEach(function (a) { byId[a.customer_id] = a; });
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var FILTERS = ["risk", "value", "playbook", "owner", "group", "action"];
  var countEl = document.getElementById("alert-count");
  var search = document.getElementById("f-search");
  var detail = document.getElementById("detail");
  var sortKey = null, sortDir = 1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function state() {
    var s = {};
    FILTERS.forEach(function (f) { s[f] = document.getElementById("f-" + f).value; });
    s.q = search.value.trim();
    return s;
  }

  function matches(row, s) {
    var d = row.dataset;
    if (s.risk && d.risk !== s.risk) { return false; }
    if (s.value && d.value !== s.value) { return false; }
    if (s.playbook && d.playbook !== s.playbook) { return false; }
    if (s.owner && d.owner !== s.owner) { return false; }
    if (s.group && d.groups.indexOf("|" + s.group + "|") < 0) { return false; }
    if (s.action && d.action !== s.action) { return false; }
    if (s.q && d.id.toLowerCase().indexOf(s.q.toLowerCase()) < 0) { return false; }
    return true;
  }

  function apply() {
    var s = state(), shown = 0;
    rows.forEach(function (row) {
      var ok = matches(row, s);
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    countEl.textContent = String(shown);
    writeHash();
  }

  function sortBy(key, dir) {
    var th = table.querySelector('th[data-key="' + key + '"]');
    if (!th) { return; }
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.dataset.type === "num";
    rows.sort(function (a, b) {
      var x = a.cells[idx].dataset.v, y = b.cells[idx].dataset.v;
      if (numeric) {
        x = x === "" ? -Infinity : Number(x); y = y === "" ? -Infinity : Number(y);
        return (x - y) * dir;
      }
      return x.localeCompare(y) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.querySelectorAll("th[data-key]"), function (h) {
      h.setAttribute("aria-sort", h === th ? (dir > 0 ? "ascending" : "descending") : "none");
    });
    sortKey = key; sortDir = dir;
  }

  function section(title) {
    var box = el("div", "dsec");
    box.appendChild(el("h3", null, title));
    detail.appendChild(box);
    return box;
  }

  function pairs(box, items) {
    var dl = el("dl", "kv");
    items.forEach(function (kv) {
      if (kv[1] === null || kv[1] === undefined || kv[1] === "" || kv[1] === "—") { return; }
      dl.appendChild(el("dt", null, kv[0]));
      dl.appendChild(el("dd", null, kv[1]));
    });
    box.appendChild(dl);
  }

  function bars(box, list) {
    if (!list.length) { box.appendChild(el("div", "empty", "No reason details recorded for this customer.")); return; }
    list.forEach(function (b) {
      var row = el("div", "xrow");
      row.title = b.group + (b.family ? " (" + b.family + ")" : "");
      row.appendChild(el("div", "lbl", b.label));
      var div = el("div", "div"), neg = el("div", "neg"), pos = el("div", "pos");
      var fill = el("div", b.direction);
      fill.style.width = b.width + "%";
      (b.direction === "up" ? pos : neg).appendChild(fill);
      div.appendChild(neg); div.appendChild(pos); row.appendChild(div);
      row.appendChild(el("div", "pts " + b.direction, b.points_text));
      box.appendChild(row);
    });
  }

  function openDetail(id) {
    var a = byId[id];
    rows.forEach(function (r) { r.classList.toggle("current", r.dataset.id === id); });
    document.getElementById("listwrap").classList.toggle("has-detail", !!a);
    if (!a) { detail.hidden = true; detail.dataset.customer = ""; writeHash(); return; }
    detail.textContent = "";
    detail.dataset.customer = id;
    var head = el("div", "dhead");
    head.appendChild(el("span", "cust mono", a.customer_id));
    head.appendChild(el("b", null, a.probability_text));
    head.appendChild(el("span", "badge " + a.risk_badge, a.risk_tier));
    head.appendChild(el("span", "badge tier " + a.value_tier, a.value_tier));
    var close = el("button", "close", "Close ×");
    close.type = "button";
    close.addEventListener("click", function () { openDetail(""); });
    head.appendChild(close);
    detail.appendChild(head);
    detail.appendChild(el("div", "callout info action-" + a.action, a.action_reason));
    pairs(section("Customer"), [["Rank", a.rank], ["Lifecycle stage", a.lifecycle_stage],
      ["Lifetime value", a.lifetime_value_text], ["Value at risk", a.value_at_risk_text],
      ["Expected net value", a.expected_net_value_text]]);
    var why = section("Why: reasons and their effect on the churn probability");
    bars(why, a.bars);
    if (a.protective) { why.appendChild(el("div", "protective", "▼ " + a.protective)); }
    if (a.counterfactual.length) { pairs(section("What would change the risk (counterfactual)"), a.counterfactual); }
    if (a.timing.length) { pairs(section("When: timing and urgency"), a.timing); }
    if (a.history.length) { pairs(section("History of scores"), a.history); }
    pairs(section("Playbook and why it was chosen"), [["Playbook", a.playbook_name], ["Action", a.playbook_action],
      ["Channel", a.playbook_channel], ["Owner", a.playbook_owner], ["Kind", a.playbook_kind],
      ["Cost per contact", a.playbook_cost_text], ["Act within", a.playbook_sla],
      ["Rule that chose it", a.playbook_rule]]);
    if (a.extras.length) { pairs(section("Other fields"), a.extras); }
    detail.hidden = false;
    writeHash();
  }

  function writeHash() {
    var s = state(), p = new URLSearchParams();
    FILTERS.concat(["q"]).forEach(function (f) { if (s[f]) { p.set(f, s[f]); } });
    if (sortKey) { p.set("sort", (sortDir < 0 ? "-" : "") + sortKey); }
    if (detail.dataset.customer) { p.set("customer", detail.dataset.customer); }
    var keep = new URLSearchParams(location.hash.replace(/^#/, "")).get("only");
    if (keep) { p.set("only", keep); }
    var h = p.toString();
    if (("#" + h) !== location.hash && !(h === "" && location.hash === "")) {
      history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
    }
  }

  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    FILTERS.forEach(function (f) {
      var sel = document.getElementById("f-" + f), v = p.get(f) || "";
      if (v && !Array.prototype.some.call(sel.options, function (o) { return o.value === v; })) { v = ""; }
      sel.value = v;
    });
    search.value = p.get("q") || "";
    var sort = p.get("sort");
    if (sort) { sortBy(sort.replace(/^-/, ""), sort.charAt(0) === "-" ? -1 : 1); }
    apply();
    openDetail(p.get("customer") || "");
    // only=alerts shows just the header and the alert list (for a printout or a screenshot of a filtered view)
    var only = p.get("only") === "alerts";
    Array.prototype.forEach.call(document.querySelectorAll("main > section, footer, nav.toc"), function (sec) {
      sec.hidden = only && sec.id !== "alerts";
    });
  }

  FILTERS.forEach(function (f) { document.getElementById("f-" + f).addEventListener("change", apply); });
  search.addEventListener("input", apply);
  document.getElementById("f-reset").addEventListener("click", function () {
    FILTERS.forEach(function (f) { document.getElementById("f-" + f).value = ""; });
    search.value = ""; apply();
  });
  Array.prototype.forEach.call(table.querySelectorAll("th[data-key]"), function (th) {
    th.addEventListener("click", function () {
      sortBy(th.dataset.key, sortKey === th.dataset.key ? -sortDir : (th.dataset.type === "num" ? -1 : 1));
      writeHash();
    });
  });
  body.addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr");
    if (tr && tr.dataset.id) { openDetail(tr.dataset.id); detail.scrollIntoView({block: "nearest"}); }
  });
  window.addEventListener("hashchange", readHash);
  readHash();
  document.documentElement.dataset.ready = "true";
}());
