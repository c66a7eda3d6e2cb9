// Chat playground: streams replies from the gateway's /v1/chat/completions with fetch and a
// ReadableStream, token by token; embedding models go to /v1/embeddings. One model, or two side
// by side (tokens, cost, latency each). No framework; the key never leaves this page's memory.
(function () {
  "use strict";
  const root = document.querySelector(".playground");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const $ = (sel) => document.querySelector(sel);
  const log = $("#chat-log"), status = $("#key-status"), alertBox = $("#pg-alert");
  const sendBtn = $("#pg-send"), stopBtn = $("#pg-stop"), message = $("#pg-message");
  const temp = $("#pg-temperature"), tempOut = $("#pg-temperature-value");
  const clientKey = $("#pg-key"), compare = $("#pg-compare");
  const CUSTOM = "__custom__";
  const pickers = [
    { select: $("#pg-model"), custom: $("#pg-model-custom") },
    { select: $("#pg-model-b"), custom: $("#pg-model-b-custom") },
  ];
  let playgroundKey = null, controllers = [], catalog = { models: [], any_model_upstreams: [] };
  let histories = [[], []], loadedOnce = false;

  temp.addEventListener("input", () => { tempOut.textContent = temp.value; });

  function activeKey() { return clientKey.value.trim() || playgroundKey; }

  function showAlert(text) {
    alertBox.textContent = text;
    alertBox.hidden = !text;
  }

  async function fetchPlaygroundKey() {
    const resp = await fetch("/playground/key", {
      method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
    });
    if (!resp.ok) throw new Error("Could not get a playground key (HTTP " + resp.status + ").");
    playgroundKey = (await resp.json()).key;
  }

  function fill(select) {
    const keep = select.value;
    select.innerHTML = "";
    for (const [kind, label] of [["chat", "Chat models"], ["embedding", "Embedding models"]]) {
      const items = catalog.models.filter((m) => m.kind === kind);
      if (!items.length) continue;
      const group = document.createElement("optgroup");
      group.label = label;
      for (const m of items) group.append(new Option(kind === "embedding" ? m.id + " (embedding)" : m.id, m.id));
      select.append(group);
    }
    select.add(new Option("Type a model name…", CUSTOM));
    if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
  }

  async function loadModels() {
    const resp = await fetch("/playground/models", { credentials: "same-origin" });
    if (!resp.ok) throw new Error("Could not list the models (HTTP " + resp.status + ").");
    catalog = await resp.json();
    if (clientKey.value.trim()) {
      // A pasted key may be limited to some models: offer what the gateway lists for it.
      const mine = await fetch("/v1/models", { headers: { Authorization: "Bearer " + activeKey() } });
      if (mine.ok) {
        const ids = ((await mine.json()).data || []).map((m) => m.id);
        catalog.models = ids.map((id) => info(id).kind ? info(id) : { id, kind: kindOf(id), price: null });
      }
    }
    for (const p of pickers) { fill(p.select); syncCustom(p); }
    // First load: a second model different from the first, ready for a comparison.
    if (!loadedOnce && pickers[1].select.options.length > 2) pickers[1].select.selectedIndex = 1;
    loadedOnce = true;
    const n = catalog.models.length;
    status.textContent = (clientKey.value.trim() ? "Using the pasted client key" :
      "Using your playground key (“Admin playground”)") + " · " + n + " model(s)" +
      (catalog.any_model_upstreams.length ? " · any typed name goes to " + catalog.any_model_upstreams.join(", ") : "");
  }

  function syncCustom(p) {
    p.custom.hidden = p.select.value !== CUSTOM;
    if (!p.custom.hidden) p.custom.focus();
  }
  for (const p of pickers) p.select.addEventListener("change", () => syncCustom(p));
  compare.addEventListener("change", () => { $("#pg-model-b-field").hidden = !compare.checked; });

  function chosen(p) {
    return p.select.value === CUSTOM ? p.custom.value.trim() : p.select.value;
  }
  function info(model) {
    return catalog.models.find((m) => m.id === model) || { id: model, kind: null, price: null };
  }
  function kindOf(model) {
    const known = info(model).kind;
    if (known) return known;
    return /embed|(^|[/_-])(bge|e5|gte|voyage)([/_.-]|$)/i.test(model) ? "embedding" : "chat";
  }

  function errorText(code, body) {
    const err = body && body.error;
    const why = code === 401 ? "The gateway refused the key" :
      code === 429 ? "A limit of this key was reached" :
      code >= 500 ? "The upstream or the gateway failed" : "The request was refused";
    return why + " (HTTP " + code + ")" + (err && err.message ? ": " + err.message : ".");
  }

  function bubble(role, text, label, parent) {
    const empty = $("#chat-empty");
    if (empty) empty.remove();
    const div = document.createElement("div");
    div.className = "msg " + role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant" + (label ? " · " + label : "");
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    div.append(who, body);
    (parent || log).append(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function meta(div, text, isError) {
    const m = document.createElement(isError ? "p" : "div");
    m.className = isError ? "meta error notice" : "meta";
    m.textContent = text;
    div.append(m);
  }

  function money(usd) {
    if (usd === null) return "cost —";
    return "$" + (usd < 0.01 ? usd.toPrecision(2) : usd.toFixed(4));
  }
  function cost(model, usage) {
    const price = info(model).price;
    if (!price || !usage) return null;
    return ((usage.prompt_tokens || 0) * price.input + (usage.completion_tokens || 0) * price.output) / 1e6;
  }

  async function call(path, payload, signal) {
    return fetch(path, {
      method: "POST", signal,
      headers: { Authorization: "Bearer " + activeKey(), "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
  }

  // One model's answer to `text`, into `reply`. Returns false when the key must be refetched.
  async function answer(slot, model, text, reply, controller, retried) {
    const out = reply.querySelector(".text");
    const started = performance.now();
    const embedding = kindOf(model) === "embedding";
    let resp;
    if (embedding) {
      resp = await call("/v1/embeddings", { model, input: text }, controller.signal);
    } else {
      const messages = [];
      const system = $("#pg-system").value.trim();
      if (system) messages.push({ role: "system", content: system });
      messages.push(...histories[slot], { role: "user", content: text });
      const payload = {
        model, messages, stream: true, stream_options: { include_usage: true },
        temperature: parseFloat(temp.value),
      };
      const maxTokens = parseInt($("#pg-max-tokens").value, 10);
      if (maxTokens > 0) payload.max_tokens = maxTokens;
      resp = await call("/v1/chat/completions", payload, controller.signal);
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 401 && !retried && !clientKey.value.trim()) return false;
      reply.dataset.state = "error";
      const text = errorText(resp.status, body);
      meta(reply, text, true);
      showAlert(model + ": " + text);
      return true;
    }
    if (embedding) {
      const body = await resp.json();
      const vector = (body.data && body.data[0] && body.data[0].embedding) || [];
      out.textContent = "[" + vector.slice(0, 8).map((x) => Number(x).toFixed(4)).join(", ") + (vector.length > 8 ? ", …" : "") + "]";
      const usage = body.usage || null;
      reply.dataset.state = "done";
      meta(reply, "embedding of " + vector.length + " dimensions · " + (usage ? usage.prompt_tokens + " tokens · " : "") +
        money(cost(model, usage)) + " · total " + Math.round(performance.now() - started) + " ms");
      return true;
    }
    reply.dataset.state = "streaming";
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", firstToken = null, usage = null, content = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let chunk;
          try { chunk = JSON.parse(data); } catch (e) { continue; }
          if (chunk.error) throw new Error(chunk.error.message || "stream error");
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (firstToken === null) firstToken = performance.now();
            content += delta.content;
            out.textContent = content;
            log.scrollTop = log.scrollHeight;
          }
        }
      }
    }
    const total = performance.now() - started;
    histories[slot].push({ role: "user", content: text }, { role: "assistant", content });
    reply.dataset.state = "done";
    const parts = [];
    if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens +
      " completion = " + usage.total_tokens + " tokens");
    parts.push(money(cost(model, usage)));
    if (firstToken !== null) parts.push("first token " + Math.round(firstToken - started) + " ms");
    parts.push("total " + Math.round(total) + " ms");
    meta(reply, parts.join(" · "));
    return true;
  }

  async function run(slot, model, text, parent, label) {
    const controller = new AbortController();
    controllers.push(controller);
    for (let attempt = 0; attempt < 2; attempt++) {
      const reply = bubble("assistant", "", label, parent);
      reply.dataset.model = model;
      reply.dataset.state = "waiting";
      try {
        if (await answer(slot, model, text, reply, controller, attempt > 0)) return;
        reply.remove();  // playground key rotated by another tab: get a fresh one, once
        await fetchPlaygroundKey();
      } catch (err) {
        reply.dataset.state = controller.signal.aborted ? "stopped" : "error";
        const why = controller.signal.aborted ? "stopped" : String(err.message || err);
        meta(reply, why, !controller.signal.aborted);
        if (!controller.signal.aborted) showAlert(model + ": " + why);
        return;
      }
    }
  }

  async function send(text) {
    const models = [chosen(pickers[0])];
    if (compare.checked) models.push(chosen(pickers[1]));
    bubble("user", text);
    showAlert("");
    log.setAttribute("aria-busy", "true");
    sendBtn.disabled = true; stopBtn.disabled = false;
    let parent = log;
    if (models.length > 1) {
      parent = document.createElement("div");
      parent.className = "pair";
      log.append(parent);
    }
    try {
      await Promise.all(models.map((m, i) => run(i, m, text, parent, m)));
    } finally {
      log.removeAttribute("aria-busy");
      sendBtn.disabled = false; stopBtn.disabled = true; controllers = [];
    }
  }

  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = message.value.trim();
    if (!text || controllers.length) return;
    for (const [i, p] of pickers.entries()) {
      if (i === 1 && !compare.checked) continue;
      if (!chosen(p)) {
        showAlert(p.select.value === CUSTOM ? "Type a model name first." : "Pick a model first.");
        (p.select.value === CUSTOM ? p.custom : p.select).focus();
        return;
      }
    }
    message.value = "";
    send(text);
  });
  message.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  stopBtn.addEventListener("click", () => { for (const c of controllers) c.abort(); });
  $("#pg-clear").addEventListener("click", () => {
    histories = [[], []];
    showAlert("");
    log.innerHTML = '<p class="empty" id="chat-empty">Conversation cleared.</p>';
  });
  clientKey.addEventListener("change", () => { checkKey().catch(showError); });

  // A pasted key is checked at once: a wrong one is an alert, not a quiet failure later.
  async function checkKey() {
    showAlert("");
    const resp = await fetch("/v1/models", { headers: { Authorization: "Bearer " + activeKey() } });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      showAlert("This key cannot be used: " + errorText(resp.status, body));
    }
    await loadModels();
  }

  function showError(err) { showAlert(String(err.message || err)); }

  fetchPlaygroundKey().then(loadModels).catch(showError);
})();
