/* callrec console: waveform lanes, playback sync and find-in-call for the call page.
 * Plain script, no build step, no inline script anywhere (the page's CSP forbids it).
 * The waveform is drawn from /calls/<id>/peaks.json (min/max per 10 ms and channel);
 * the browser never downloads the WAV to draw it. */
"use strict";

(function () {
  const wave = document.getElementById("waveform");
  const audio = document.getElementById("player");
  const transcript = document.getElementById("transcript");
  const find = document.getElementById("find");
  if (!wave) return;
  const durationMs = Number(wave.dataset.durationMs) || 0;
  const playhead = document.getElementById("playhead");
  let peaks = null;
  const segments = transcript ? Array.from(transcript.querySelectorAll(".seg")) : [];

  function drawLane(canvas, channel) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = Math.max(1, Math.floor(width * ratio));
    canvas.height = Math.max(1, Math.floor(height * ratio));
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const mins = channel.min, maxs = channel.max, n = mins.length;
    if (!n) return;
    // Each lane is scaled to its own loudest window: a quiet caller stays visible.
    let loudest = 4;
    for (let i = 0; i < n; i++) {
      loudest = Math.max(loudest, maxs[i], -mins[i]);
    }
    const mid = height / 2, scale = (height / 2 - 2) / loudest;
    ctx.fillStyle = channel.track === "inbound" ? "#2e7d32" : "#6a3fb5";
    const totalMs = Math.max(durationMs, n * peaks.window_ms);
    for (let x = 0; x < width; x++) {
      const from = Math.floor((x / width) * totalMs / peaks.window_ms);
      const to = Math.max(from + 1, Math.floor(((x + 1) / width) * totalMs / peaks.window_ms));
      let lo = 0, hi = 0;
      for (let i = from; i < to && i < n; i++) {
        if (mins[i] < lo) lo = mins[i];
        if (maxs[i] > hi) hi = maxs[i];
      }
      const top = mid - hi * scale, bottom = mid - lo * scale;
      ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  }

  function drawAll() {
    if (!peaks) return;
    wave.querySelectorAll(".lane").forEach(function (lane) {
      const channel = peaks.channels[Number(lane.dataset.channel)];
      if (channel) drawLane(lane.querySelector("canvas"), channel);
    });
  }

  fetch(wave.dataset.peaks, { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (data) { peaks = data; drawAll(); wave.dataset.drawn = data ? "yes" : "no"; })
    .catch(function () { wave.dataset.drawn = "no"; });
  window.addEventListener("resize", drawAll);

  if (find && transcript) {
    let hits = [], at = -1;
    const count = document.getElementById("find-count");
    find.addEventListener("input", function () {
      const needle = find.value.trim().toLowerCase();
      hits = [];
      at = -1;
      segments.forEach(function (seg) {
        const match = needle !== "" && seg.textContent.toLowerCase().includes(needle);
        seg.classList.toggle("found", match);
        if (match) hits.push(seg);
      });
      count.textContent = needle ? hits.length + " found" : "";
    });
    find.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || !hits.length) return;
      event.preventDefault();
      at = (at + 1) % hits.length;
      hits[at].scrollIntoView({ block: "center" });
      if (audio) seek(Number(hits[at].dataset.start));
    });
  }
  if (!audio) return;
  const starts = segments.map(function (s) { return Number(s.dataset.start); });
  let current = null;

  function seek(ms) {
    audio.currentTime = ms / 1000;
    const playing = audio.play();
    if (playing && playing.catch) playing.catch(function () {});
  }

  function segmentAt(ms) {
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {  // last segment starting at or before ms
      const m = (lo + hi) >> 1;
      if (starts[m] <= ms) { found = m; lo = m + 1; } else { hi = m - 1; }
    }
    if (found < 0) return null;
    const seg = segments[found];
    return ms < Number(seg.dataset.end) ? seg : null;
  }

  function follow() {
    const ms = audio.currentTime * 1000;
    const total = durationMs || (audio.duration * 1000) || 1;
    playhead.style.left = Math.min(100, (ms / total) * 100) + "%";
    const seg = segmentAt(ms);
    if (seg !== current) {
      if (current) current.classList.remove("current");
      if (seg) {
        seg.classList.add("current");
        const box = transcript.getBoundingClientRect(), r = seg.getBoundingClientRect();
        if (r.top < box.top || r.bottom > box.bottom) {
          transcript.scrollTop += r.top - box.top - box.height / 3;
        }
      }
      current = seg;
    }
  }

  function tick() {
    follow();
    if (!audio.paused) window.requestAnimationFrame(tick);
  }
  audio.addEventListener("timeupdate", follow);
  audio.addEventListener("seeked", follow);
  audio.addEventListener("play", function () { window.requestAnimationFrame(tick); });

  wave.addEventListener("click", function (event) {
    const box = wave.getBoundingClientRect();
    const total = durationMs || (audio.duration * 1000) || 0;
    seek(((event.clientX - box.left) / box.width) * total);
  });

  // Clicking a word, a transcript segment or a turn seeks there.
  [transcript, document.getElementById("turns")].forEach(function (list) {
    if (!list) return;
    list.addEventListener("click", function (event) {
      const word = event.target.closest(".w");
      const seg = event.target.closest(".seg");
      if (word) seek(Number(word.dataset.start));
      else if (seg) seek(Number(seg.dataset.start));
    });
  });

  const startAt = Number(audio.dataset.startAt) || 0;
  if (startAt > 0) {
    // A link from a search snippet: seek there once the user starts playback.
    audio.addEventListener("play", function once() {
      audio.removeEventListener("play", once);
      if (audio.currentTime < 0.1) audio.currentTime = startAt;
    });
    const seg = segmentAt(startAt * 1000);
    if (seg) { seg.classList.add("current"); current = seg; seg.scrollIntoView({ block: "center" }); }
  }

})();
