// Small progressive enhancements; every page also works without JavaScript.
(function () {
  "use strict";
  // Copy buttons: <button data-copy="#input-id">
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("[data-copy]");
    if (!btn) return;
    const input = document.querySelector(btn.dataset.copy);
    const note = document.querySelector("[data-copy-status]");
    input.select();
    let ok = false;
    try {
      await navigator.clipboard.writeText(input.value);
      ok = true;
    } catch (e) {
      ok = document.execCommand && document.execCommand("copy");
    }
    btn.textContent = ok ? "Copied" : "Copy";
    if (note) note.textContent = ok ? "Copied to the clipboard." : "Select the key and copy it by hand.";
  });
  // Forms that ask first: <form data-confirm="Sure?">
  document.addEventListener("submit", (ev) => {
    const msg = ev.target.dataset && ev.target.dataset.confirm;
    if (msg && !window.confirm(msg)) ev.preventDefault();
  }, true);
  // Drafts: a posted form's values stay in this tab (sessionStorage) for one page load. If the
  // session expired meanwhile, the login page sends the user back with ?resumed=1 and the
  // form is filled back in. Never kept: the CSRF token, passwords, upstream keys, files.
  const DRAFT = "tollway-draft";
  const SKIP = new Set(["csrf", "api_key", "secret"]);
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (ev.defaultPrevented || (form.method || "").toLowerCase() !== "post" || form.hasAttribute("data-no-draft")) return;
    const values = [];
    for (const el of form.elements) {
      if (!el.name || SKIP.has(el.name) || el.type === "password" || el.type === "file" || el.type === "hidden") continue;
      values.push([el.name, el.type === "checkbox" || el.type === "radio" ? el.checked : el.value]);
    }
    try {
      sessionStorage.setItem(DRAFT, JSON.stringify({ page: location.pathname, action: form.getAttribute("action") || "", values }));
    } catch (e) { /* storage full or off: nothing kept */ }
  });
  function restoreDraft() {
    let draft = null;
    try { draft = JSON.parse(sessionStorage.getItem(DRAFT) || "null"); } catch (e) { draft = null; }
    if (location.pathname === "/login") return; // keep it across the login page
    try { sessionStorage.removeItem(DRAFT); } catch (e) { /* ignore */ }
    const params = new URLSearchParams(location.search);
    if (!params.has("resumed")) return;
    params.delete("resumed");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
    if (!draft || draft.page !== location.pathname) return;
    const form = Array.from(document.querySelectorAll("form[method=post]")).find((f) => (f.getAttribute("action") || "") === draft.action);
    if (!form) return;
    for (const [name, value] of draft.values) {
      const el = form.elements.namedItem(name);
      if (!el || el instanceof RadioNodeList) continue;
      if (el.type === "checkbox" || el.type === "radio") el.checked = !!value;
      else el.value = value;
    }
    const note = document.createElement("p");
    note.className = "notice warn";
    note.id = "draft-restored";
    note.setAttribute("role", "alert");
    note.textContent = "Your session expired before this form was saved, so nothing was changed. What you entered is filled back in: check it and save again.";
    form.parentNode.insertBefore(note, form);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", restoreDraft);
  else restoreDraft();
  // Filter forms that apply on change: <form data-autosubmit>
  document.addEventListener("change", (ev) => {
    const form = ev.target.form;
    if (form && form.hasAttribute("data-autosubmit")) form.requestSubmit();
  });
})();
