// The devices page: refresh each device's row from /devices/status.json every five seconds.
"use strict";
const gb = (bytes) => (bytes === null || bytes === undefined ? "-" : (bytes / 1e9).toFixed(1) + " GB");
async function refresh() {
  try {
    const answer = await fetch("/devices/status.json", { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) return;
    const { devices } = await answer.json();
    for (const d of devices) {
      const row = document.querySelector(`tr[data-device="${CSS.escape(d.id)}"]`);
      if (!row) continue;
      const state = row.querySelector(".state");
      state.textContent = d.state;
      state.className = "state " + (d.online ? "online" : "offline");
      row.querySelector(".spool").textContent = d.spool_depth ?? "-";
      row.querySelector(".disk").textContent = gb(d.disk_free_bytes);
      row.querySelector(".seen").textContent = d.last_seen ?? "never";
      row.querySelector(".firmware").textContent = d.firmware_version ?? "-";
    }
  } catch (error) {
    // The server restarting: try again at the next tick.
  }
}
document.addEventListener("DOMContentLoaded", () => setInterval(refresh, 5000));
