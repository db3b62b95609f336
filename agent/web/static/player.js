// The call page: a click on the waveform or a bookmark seeks the player; "Now" takes the player's time.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const audio = document.getElementById("player");
  if (!audio) return;
  const seek = (seconds) => {
    audio.currentTime = Math.max(0, seconds);
    audio.play().catch(() => {});
  };
  const wave = document.getElementById("waveform");
  if (wave) {
    wave.addEventListener("click", (event) => {
      const box = wave.getBoundingClientRect();
      const length = Number.isFinite(audio.duration) ? audio.duration : Number(wave.dataset.duration);
      seek(((event.clientX - box.left) / box.width) * length);
    });
  }
  for (const button of document.querySelectorAll("button.seek")) {
    button.addEventListener("click", () => seek(Number(button.dataset.at)));
  }
  const now = document.getElementById("bookmark-now");
  const at = document.getElementById("bookmark-at");
  if (now && at) {
    now.addEventListener("click", () => { at.value = audio.currentTime.toFixed(1); });
  }
});
