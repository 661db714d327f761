// evalgate report: table sorting and the lazily rendered case drill-down.
// Every string from a run is untrusted: this script only ever sets textContent.
(function () {
  "use strict";
  var PAGE = 100;
  var data = JSON.parse(document.getElementById("evalgate-data").textContent);
  var F = {};
  data.fields.forEach(function (name, i) { F[name] = i; });
  var G = {};
  data.grade_fields.forEach(function (name, i) { G[name] = i; });
  // What a grade's flag means, shown on hover; unknown flags show their own name.
  var FLAG_HELP = {
    "addresses-grader": "a judge-graded pass whose output speaks to the grader: check it by hand"
  };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmtNum(v, digits) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }
  function fmtUsd(v) {
    if (v === null || v === undefined) return "—";
    if (v === 0) return "$0";
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    var d = Math.min(12, 2 - Math.floor(Math.log10(Math.abs(v))));
    return "$" + v.toFixed(d);
  }
  function fmtMs(v) { return v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en-US") + " ms"; }

  // -- sortable tables ------------------------------------------------------------------
  function sortValue(td) {
    var raw = td.getAttribute("data-sort");
    if (raw === null || raw === "" || raw === "None") return null;
    var n = Number(raw);
    return isNaN(n) ? raw.toLowerCase() : n;
  }
  function setupSort(table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortValue(a.cells[col]), y = sortValue(b.cells[col]);
          if (x === null && y === null) return 0;
          if (x === null) return 1;  // unknown figures last, whichever the direction
          if (y === null) return -1;
          var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  document.querySelectorAll("table.sortable").forEach(setupSort);

  // -- drill-down -------------------------------------------------------------------------
  function cellStatus(rows) {
    if (!rows || !rows.length) return "none";
    var passed = 0, ok = 0;
    for (var k = 0; k < rows.length; k++) {
      if (rows[k][F.error]) return "error";
      ok++;
      if (rows[k][F.passed]) passed++;
    }
    return passed === ok ? "pass" : "miss";
  }
  function cellFlaky(rows) {
    if (!rows || rows.length < 2) return false;
    var p = 0, n = 0;
    rows.forEach(function (r) { if (!r[F.error]) { n++; if (r[F.passed]) p++; } });
    return p > 0 && p < n;
  }
  var SYMBOL = { pass: "✓", miss: "✗", error: "!", none: "·" };

  function Drill(root, suite) {
    this.root = root;
    this.suite = suite;
    this.filter = "all";
    this.query = "";
    this.page = 0;
    this.flags = null;
    this.haystack = null;
    this.visible = [];
    this.bind();
    this.apply();
  }
  Drill.prototype.computeFlags = function () {
    // Per case: [any miss, differs from baseline, any error, flaky]; computed once.
    var s = this.suite, b = s.baseline, flags = new Array(s.cases.length);
    this.status = new Array(s.cases.length);
    for (var i = 0; i < s.cases.length; i++) {
      var row = s.grid[i], st = new Array(row.length), miss = false, err = false, flaky = false, differs = false;
      for (var j = 0; j < row.length; j++) {
        st[j] = cellStatus(row[j]);
        if (st[j] === "miss") miss = true;
        if (st[j] === "error") err = true;
        if (cellFlaky(row[j])) { flaky = true; }
      }
      if (b !== null && st[b] !== "none") {
        for (j = 0; j < row.length; j++) if (j !== b && st[j] !== "none" && st[j] !== st[b]) differs = true;
      }
      this.status[i] = st;
      flags[i] = { miss: miss, differs: differs, error: err, flaky: flaky };
    }
    this.flags = flags;
  };
  Drill.prototype.buildHaystack = function () {
    var s = this.suite;
    this.haystack = s.cases.map(function (id, i) {
      var parts = [id];
      s.grid[i].forEach(function (cell) { (cell || []).forEach(function (r) { parts.push(r[F.output] || ""); }); });
      return parts.join("\n").toLowerCase();
    });
  };
  Drill.prototype.bind = function () {
    var self = this, root = this.root;
    root.querySelectorAll(".filters button").forEach(function (btn) {
      btn.addEventListener("click", function () {
        root.querySelectorAll(".filters button").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
        btn.setAttribute("aria-pressed", "true");
        self.filter = btn.getAttribute("data-filter");
        self.page = 0;
        self.apply();
      });
    });
    var timer = null;
    root.querySelector(".search").addEventListener("input", function (ev) {
      clearTimeout(timer);
      timer = setTimeout(function () { self.query = ev.target.value.trim().toLowerCase(); self.page = 0; self.apply(); }, 120);
    });
    root.querySelector(".prev").addEventListener("click", function () { if (self.page > 0) { self.page--; self.render(); } });
    root.querySelector(".next").addEventListener("click", function () {
      if ((self.page + 1) * PAGE < self.visible.length) { self.page++; self.render(); }
    });
    root.querySelector("table.grid").addEventListener("click", function (ev) {
      var btn = ev.target.closest ? ev.target.closest("button.cell") : null;
      if (!btn || btn.classList.contains("s-none")) return;
      root.querySelectorAll("button.cell.selected").forEach(function (b) { b.classList.remove("selected"); });
      btn.classList.add("selected");
      self.detail(Number(btn.getAttribute("data-i")), Number(btn.getAttribute("data-j")));
    });
  };
  Drill.prototype.apply = function () {
    if (!this.flags && this.filter !== "all") this.computeFlags();
    if (this.query && !this.haystack) this.buildHaystack();
    var out = [], s = this.suite, f = this.filter, q = this.query;
    for (var i = 0; i < s.cases.length; i++) {
      if (f !== "all" && !this.flags[i][f]) continue;
      if (q && this.haystack[i].indexOf(q) < 0) continue;
      out.push(i);
    }
    this.visible = out;
    this.render();
  };
  Drill.prototype.render = function () {
    var s = this.suite, root = this.root, table = root.querySelector("table.grid");
    if (!this.status) this.computeFlags();
    var thead = table.tHead, tbody = table.tBodies[0];
    if (!thead.rows.length) {
      var hr = el("tr");
      hr.appendChild(el("th", { scope: "col" }, "case"));
      s.configs.forEach(function (c, j) {
        hr.appendChild(el("th", { scope: "col" }, c + (j === s.baseline ? " (baseline)" : "")));
      });
      thead.appendChild(hr);
    }
    var frag = document.createDocumentFragment();
    var start = this.page * PAGE, stop = Math.min(this.visible.length, start + PAGE);
    for (var k = start; k < stop; k++) {
      var i = this.visible[k], tr = el("tr", { "data-case": s.cases[i] });
      tr.appendChild(el("td", { "class": "case" }, s.cases[i]));
      for (var j = 0; j < s.configs.length; j++) {
        var st = this.status[i][j], rows = s.grid[i][j];
        var flaky = cellFlaky(rows);
        var label = s.cases[i] + " under " + s.configs[j] + ": " + st + (flaky ? ", flaky" : "");
        var btn = el("button", { type: "button", "class": "cell s-" + st, "data-i": i, "data-j": j,
          "data-status": st, "aria-label": label, title: label }, SYMBOL[st] + (flaky ? "~" : ""));
        var td = el("td");
        td.appendChild(btn);
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    tbody.textContent = "";
    tbody.appendChild(frag);
    var names = { all: "all", miss: "misses", differs: "differs from baseline", error: "errors", flaky: "flaky" };
    root.querySelector(".count").textContent = this.visible.length
      ? "cases " + (start + 1) + "–" + stop + " of " + this.visible.length + " (" + names[this.filter] + (this.query ? ", matching search" : "") + ")"
      : "no case matches (" + names[this.filter] + (this.query ? ", search" : "") + ")";
    root.querySelector(".prev").disabled = this.page === 0;
    root.querySelector(".next").disabled = stop >= this.visible.length;
  };
  Drill.prototype.side = function (i, j, title) {
    var s = this.suite, rows = s.grid[i][j] || [], box = el("div", { "class": "side", "data-config": s.configs[j] });
    box.appendChild(el("h5", null, title));
    var hash = s.prompts[i] ? s.prompts[i][j] : null, messages = hash ? s.messages[hash] : null;
    var prompt = el("details", { "class": "prompt" });
    prompt.open = true;
    prompt.appendChild(el("summary", null, "prompt"));
    if (messages) {
      messages.forEach(function (m) {
        prompt.appendChild(el("div", { "class": "role" }, m.role));
        prompt.appendChild(el("pre", { "class": "prompt-text" }, m.content));
      });
    } else {
      prompt.appendChild(el("p", { "class": "empty" }, "prompt not stored in this report"));
    }
    box.appendChild(prompt);
    rows.forEach(function (r, k) {
      if (rows.length > 1) box.appendChild(el("h5", null, "repeat " + ((r[F.repeat] || 0) + 1)));
      box.appendChild(el("div", { "class": "role" }, "output"));
      box.appendChild(el("pre", { "class": "output" }, r[F.error] && r[F.error_message] ? "error: " + r[F.error_message] : r[F.output]));
      var dl = el("dl");
      [["score", fmtNum(r[F.score], 3) + (r[F.passed] ? " (pass)" : r[F.error] ? " (error)" : " (miss)")],
       ["tokens in / out", (r[F.input_tokens] === null ? "—" : r[F.input_tokens]) + " / " + (r[F.output_tokens] === null ? "—" : r[F.output_tokens])],
       ["cost", fmtUsd(r[F.cost_usd]) + (r[F.cached] ? " (cached; saved " + fmtUsd(r[F.saved_usd]) + ")" : "")],
       ["latency", fmtMs(r[F.latency_ms])], ["TTFT", fmtMs(r[F.ttft_ms])],
       ["attempts", r[F.attempts]], ["cached", r[F.cached] ? "yes" : "no"],
       ["finish reason", r[F.finish_reason] || "—"]].forEach(function (pair) {
        dl.appendChild(el("dt", null, pair[0]));
        dl.appendChild(el("dd", null, pair[1]));
      });
      box.appendChild(dl);
      var grades = r[F.grades] || [];
      if (grades.length) {
        var t = el("table", { "class": "grades" }), head = el("tr");
        ["grader", "score", "result", "reason"].forEach(function (h) { head.appendChild(el("th", { scope: "col" }, h)); });
        t.appendChild(head);
        grades.forEach(function (g) {
          var tr = el("tr");
          tr.appendChild(el("td", null, g[G.grader]));
          tr.appendChild(el("td", { "class": "num" }, fmtNum(g[G.score], 2)));
          tr.appendChild(el("td", null, g[G.error] ? "error" : g[G.passed] ? "pass" : "miss"));
          var why = el("td", null, g[G.error] ? g[G.error] + (g[G.reason] ? " — " + g[G.reason] : "") : g[G.reason]);
          (g[G.flags] || []).forEach(function (f) { why.appendChild(el("span", { "class": "flag", title: FLAG_HELP[f] || f }, f)); });
          tr.appendChild(why);
          t.appendChild(tr);
        });
        box.appendChild(t);
      }
    });
    return box;
  };
  Drill.prototype.detail = function (i, j) {
    var s = this.suite, panel = this.root.querySelector(".detail"), b = s.baseline;
    if (!this.status) this.computeFlags();
    panel.textContent = "";
    panel.hidden = false;
    panel.appendChild(el("h4", null, s.cases[i] + " · " + s.configs[j] + " · " + this.status[i][j]));
    panel.appendChild(el("p", null, "expected: " + (s.expected[i] || "—")));
    var sides = el("div", { "class": "sides" });
    sides.appendChild(this.side(i, j, s.configs[j]));
    var other = function (rows) { return (rows || []).map(function (r) { return r[F.output]; }).join("\u0000"); };
    if (b !== null && j !== b && s.grid[i][b] &&
        (this.status[i][j] !== this.status[i][b] || other(s.grid[i][j]) !== other(s.grid[i][b]))) {
      sides.appendChild(this.side(i, b, s.configs[b] + " (baseline)"));
    }
    panel.appendChild(sides);
  };

  document.querySelectorAll(".drill").forEach(function (root) {
    var suite = data.suites[Number(root.getAttribute("data-suite"))];
    if (suite) new Drill(root, suite);
  });
  window.evalgateReady = performance.now();
  document.body.setAttribute("data-ready", "1");
})();
