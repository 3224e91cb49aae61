// Shopper page: send the message with fetch and show the answer as it streams (NDJSON lines:
// {"type":"products","html"} (filters and cards, early), {"type":"delta","text"} (answer text), then
// {"type":"answer","message","html"}; or {"type":"error","message"}). The filters shown with an answer
// are forms too (remove one, change the price): they post the edited query the same way.
(function () {
  "use strict";
  var form = document.getElementById("shop-form");
  if (!form) { return; }
  var log = document.getElementById("shop-log");
  var input = document.getElementById("shop-message");
  var send = document.getElementById("shop-send");
  var status = document.getElementById("shop-status");

  function bubble(role, text) {
    var div = document.createElement("div");
    div.className = "msg msg-" + role;
    var who = document.createElement("p");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    var p = document.createElement("p");
    p.className = "text";
    p.textContent = text;
    div.appendChild(who);
    div.appendChild(p);
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return { div: div, text: p };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var message = input.value.trim();
    if (!message) {
      status.textContent = "Please type a message first.";
      input.focus();
      return;
    }
    var body = new FormData(form);
    input.value = "";
    ask(body, message);
  });

  // A filter removed or changed: the same request, with the edited query.
  log.addEventListener("submit", function (event) {
    var target = event.target;
    if (!target || !target.classList || !target.classList.contains("filter-form")) { return; }
    event.preventDefault();
    if (send.disabled) { return; }
    var body = new FormData(target);
    ask(body, String(body.get("message") || "Changed the filters"));
  });

  function ask(body, message) {
    bubble("user", message);
    var reply = bubble("assistant", "Thinking");
    reply.div.setAttribute("aria-busy", "true");
    var started = false;
    send.disabled = true;
    status.textContent = "The assistant is answering.";

    var cards = null;
    function showCards(html) {
      if (cards) { cards.remove(); cards = null; }
      if (!html || !html.trim()) { return; }
      var tpl = document.createElement("template");
      tpl.innerHTML = html;  // rendered and escaped by the server's templates
      cards = tpl.content.firstElementChild;
      if (!cards) { return; }
      reply.div.appendChild(cards);
      if (window.htmx) { window.htmx.process(cards); }
    }

    function handle(event) {
      if (event.type === "products") {
        showCards(event.html);
      } else if (event.type === "delta") {
        if (!started) { reply.text.textContent = ""; started = true; }
        reply.text.textContent += event.text;
      } else if (event.type === "answer") {
        reply.text.textContent = event.message;
        showCards(event.html);
      } else if (event.type === "error") {
        reply.text.textContent = event.message;
        reply.text.classList.add("error");
      }
      log.scrollTop = log.scrollHeight;
    }

    fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin", headers: { "Accept": "application/x-ndjson" }
    }).then(function (response) {
      if (!response.ok || !response.body) { throw new Error("HTTP " + response.status); }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            if (buffer.trim()) { handle(JSON.parse(buffer)); }
            return;
          }
          buffer += decoder.decode(chunk.value, { stream: true });
          var nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            var line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (line) { handle(JSON.parse(line)); }
          }
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      reply.text.textContent = "Sorry, the answer could not be loaded. Please try again.";
      reply.text.classList.add("error");
    }).finally(function () {
      reply.div.removeAttribute("aria-busy");
      send.disabled = false;
      status.textContent = "";
      input.focus();
    });
  }
})();
