// Chat playground: streams replies from the gateway's /v1/chat/completions with fetch and a
// ReadableStream, token by token. No framework; the key never leaves this page's memory.
(function () {
  "use strict";
  const root = document.querySelector(".playground");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const $ = (sel) => document.querySelector(sel);
  const log = $("#chat-log"), status = $("#key-status"), modelSel = $("#pg-model");
  const sendBtn = $("#pg-send"), stopBtn = $("#pg-stop"), message = $("#pg-message");
  const temp = $("#pg-temperature"), tempOut = $("#pg-temperature-value");
  const clientKey = $("#pg-key");
  let playgroundKey = null, history = [], controller = null;

  temp.addEventListener("input", () => { tempOut.textContent = temp.value; });

  function activeKey() { return clientKey.value.trim() || playgroundKey; }

  async function fetchPlaygroundKey() {
    const resp = await fetch("/playground/key", {
      method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
    });
    if (!resp.ok) throw new Error("could not get a playground key (HTTP " + resp.status + ")");
    playgroundKey = (await resp.json()).key;
  }

  async function loadModels() {
    const key = activeKey();
    if (!key) return;
    modelSel.innerHTML = "";
    const resp = await fetch("/v1/models", { headers: { Authorization: "Bearer " + key } });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      status.textContent = "Models: " + errorText(resp.status, body);
      return;
    }
    const ids = (body.data || []).map((m) => m.id);
    for (const id of ids) modelSel.add(new Option(id, id));
    if (!ids.length) modelSel.add(new Option("no models for this key", ""));
    status.textContent = (clientKey.value.trim() ? "Using the pasted client key" :
      "Using your playground key (“Admin playground”)") + " · " + ids.length + " model(s)";
  }

  function errorText(code, body) {
    const err = body && body.error;
    return "HTTP " + code + (err && err.message ? ": " + err.message : "");
  }

  function bubble(role, text) {
    const empty = $("#chat-empty");
    if (empty) empty.remove();
    const div = document.createElement("div");
    div.className = "msg " + role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    div.append(who, body);
    log.append(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function meta(div, text, isError) {
    const m = document.createElement("div");
    m.className = "meta" + (isError ? " error" : "");
    m.textContent = text;
    div.append(m);
  }

  async function send(text, retried) {
    const model = modelSel.value;
    const messages = [];
    const system = $("#pg-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history, { role: "user", content: text });
    const payload = {
      model, messages, stream: true, stream_options: { include_usage: true },
      temperature: parseFloat(temp.value),
    };
    const maxTokens = parseInt($("#pg-max-tokens").value, 10);
    if (maxTokens > 0) payload.max_tokens = maxTokens;

    const reply = bubble("assistant", "");
    const out = reply.querySelector(".text");
    reply.dataset.state = "waiting";
    log.setAttribute("aria-busy", "true");
    controller = new AbortController();
    sendBtn.disabled = true; stopBtn.disabled = false;
    const started = performance.now();
    let firstToken = null, usage = null, content = "";
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST", signal: controller.signal,
        headers: { Authorization: "Bearer " + activeKey(), "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        if (resp.status === 401 && !retried && !clientKey.value.trim()) {
          reply.remove();  // playground key rotated by another tab: get a fresh one, once
          await fetchPlaygroundKey();
          return send(text, true);
        }
        reply.dataset.state = "error";
        meta(reply, errorText(resp.status, body), true);
        return;
      }
      reply.dataset.state = "streaming";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
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
      history.push({ role: "user", content: text }, { role: "assistant", content });
      reply.dataset.state = "done";
      const parts = [];
      if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens +
        " completion = " + usage.total_tokens + " tokens");
      if (firstToken !== null) parts.push("first token " + Math.round(firstToken - started) + " ms");
      parts.push("total " + Math.round(total) + " ms");
      meta(reply, parts.join(" · "));
    } catch (err) {
      reply.dataset.state = controller.signal.aborted ? "stopped" : "error";
      meta(reply, controller.signal.aborted ? "stopped" : String(err.message || err), true);
    } finally {
      log.removeAttribute("aria-busy");
      sendBtn.disabled = false; stopBtn.disabled = true; controller = null;
    }
  }

  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = message.value.trim();
    if (!text || controller) return;
    if (!modelSel.value) { status.textContent = "Pick a model first."; modelSel.focus(); return; }
    bubble("user", text);
    message.value = "";
    send(text, false);
  });
  message.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
  $("#pg-clear").addEventListener("click", () => {
    history = [];
    log.innerHTML = '<p class="empty" id="chat-empty">Conversation cleared.</p>';
  });
  clientKey.addEventListener("change", () => { loadModels().catch(showError); });

  function showError(err) { status.textContent = String(err.message || err); }

  fetchPlaygroundKey().then(loadModels).catch(showError);
})();
