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
  // Filter forms that apply on change: <form data-autosubmit>
  document.addEventListener("change", (ev) => {
    const form = ev.target.form;
    if (form && form.hasAttribute("data-autosubmit")) form.requestSubmit();
  });
})();
