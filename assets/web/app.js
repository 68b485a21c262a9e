// The draw-a-digit page: log in, draw on the canvas or pick a file, POST /predict, show the
// answer. No libraries, no build step; the token lives in this closure only (never storage).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const NETWORK_ERROR = 'Could not reach the server. Check the connection and try again.';
  // Friendly text per API error `code`; the server's own `msg` is added where it says more.
  const MESSAGES = {
    bad_credentials: 'Wrong username or password.',
    credentials_required: 'Enter a username and a password.',
    missing_token: 'Please log in.',
    invalid_token: 'Your session is no longer valid. Please log in again.',
    token_expired: 'Your session has expired. Please log in again.',
    blank_image: 'There is no digit in that image: draw one first.',
    empty_file: 'That file is empty.',
    zero_sized_image: 'That image has no pixels.',
    invalid_image: 'That file is not a readable image.',
    unsupported_format: 'That file type is not supported: use PNG, JPEG, BMP, GIF, WebP or PNM.',
    body_too_large: 'That file is too large.',
    image_too_large: 'That image is too large.',
    overloaded: 'The server is busy. Try again in a moment.',
  };
  const WITH_DETAIL = new Set(['invalid_image', 'body_too_large', 'image_too_large']);

  let token = null;

  const jaegerUi = httpUrl(document.querySelector('meta[name="jaeger-ui-url"]')?.content);

  function httpUrl(raw) {
    try {
      const url = new URL(raw);
      if (url.protocol === 'http:' || url.protocol === 'https:') return url.href.replace(/\/+$/, '');
    } catch {
      // not configured
    }
    return null;
  }

  /** Reads an error response as {status, code, text}, whatever its body holds. */
  async function apiError(res) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      // not JSON: a proxy's page, say
    }
    const code = typeof body?.code === 'string' ? body.code : '';
    const msg = typeof body?.msg === 'string' ? body.msg : '';
    let text = MESSAGES[code] || msg || `The server answered ${res.status} ${res.statusText}.`;
    if (MESSAGES[code] && msg && WITH_DETAIL.has(code)) text += ` (${msg})`;
    return { status: res.status, code, text };
  }

  function setBusy(button, busy, label) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.disabled = busy;
    button.textContent = busy ? label : button.dataset.label;
  }

  // ---- views -------------------------------------------------------------------------------

  function showLogin(message) {
    token = null;
    $('draw-view').hidden = true;
    $('logout').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    ($('username').value ? $('password') : $('username')).focus();
  }

  function showDraw() {
    $('login-view').hidden = true;
    $('login-error').textContent = '';
    $('draw-view').hidden = false;
    $('logout').hidden = false;
    $('predict-error').textContent = '';
    $('draw-title').focus();
  }

  // ---- login -------------------------------------------------------------------------------

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const username = $('username').value;
    const password = $('password').value;
    if (!username || !password) {
      $('login-error').textContent = MESSAGES.credentials_required;
      return;
    }
    const button = $('login-button');
    setBusy(button, true, 'Logging in…');
    $('login-error').textContent = '';
    try {
      let res;
      try {
        res = await fetch('/login', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ username, password }),
        });
      } catch {
        $('login-error').textContent = NETWORK_ERROR;
        return;
      }
      if (!res.ok) {
        $('login-error').textContent = (await apiError(res)).text;
        $('password').select();
        return;
      }
      const body = await res.json().catch(() => null);
      if (typeof body?.access_token !== 'string') {
        $('login-error').textContent = 'The server sent an unexpected answer.';
        return;
      }
      token = body.access_token;
      $('password').value = '';
      showDraw();
    } finally {
      setBusy(button, false);
    }
  });

  $('logout').addEventListener('click', () => showLogin(''));

  // ---- drawing -----------------------------------------------------------------------------

  const pad = $('pad');
  const ctx = pad.getContext('2d');
  // 20 px here: about 2 px once the server scales a full-height digit into MNIST's 20 px box.
  const LINE_WIDTH = pad.width / 14;
  let inked = false;
  let pointer = null; // id of the pointer drawing now
  let last = null;

  function clearPad() {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, pad.width, pad.height);
    inked = false;
    $('predict').disabled = true;
  }

  function toCanvas(ev) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((ev.clientX - box.left - pad.clientLeft) * pad.width) / pad.clientWidth,
      y: ((ev.clientY - box.top - pad.clientTop) * pad.height) / pad.clientHeight,
    };
  }

  function ink(from, to) {
    ctx.strokeStyle = ctx.fillStyle = '#000';
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath();
    if (from) {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    } else {
      ctx.arc(to.x, to.y, LINE_WIDTH / 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (!inked) {
      inked = true;
      $('predict').disabled = false;
      $('predict-error').textContent = '';
    }
  }

  pad.addEventListener('pointerdown', (ev) => {
    if (pointer !== null || (ev.pointerType === 'mouse' && ev.button !== 0)) return;
    ev.preventDefault();
    pointer = ev.pointerId;
    try {
      pad.setPointerCapture(ev.pointerId);
    } catch {
      // synthetic events have no capturable pointer
    }
    last = toCanvas(ev);
    ink(null, last);
  });

  pad.addEventListener('pointermove', (ev) => {
    if (ev.pointerId !== pointer) return;
    const coalesced = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
    for (const e of coalesced.length ? coalesced : [ev]) {
      const p = toCanvas(e);
      ink(last, p);
      last = p;
    }
  });

  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
    pad.addEventListener(type, (ev) => {
      if (ev.pointerId === pointer) {
        pointer = null;
        last = null;
      }
    });
  }

  $('clear').addEventListener('click', () => {
    clearPad();
    $('result').hidden = true;
    $('announce').textContent = '';
    $('predict-error').textContent = '';
  });

  // ---- predicting --------------------------------------------------------------------------

  let previewUrl = null;

  async function predict(blob, filename) {
    if (!token) {
      showLogin(MESSAGES.missing_token);
      return;
    }
    const button = $('predict');
    setBusy(button, true, 'Predicting…');
    $('predict-error').textContent = '';
    const form = new FormData();
    form.append('file', blob, filename);
    try {
      let res;
      try {
        res = await fetch('/predict', {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
          body: form,
        });
      } catch {
        $('predict-error').textContent = NETWORK_ERROR;
        return;
      }
      if (res.status === 401) {
        showLogin((await apiError(res)).text);
        return;
      }
      if (!res.ok) {
        $('predict-error').textContent = (await apiError(res)).text;
        return;
      }
      const body = await res.json().catch(() => null);
      const answer = body?.predictions ? body.predictions[0] : body;
      if (!Number.isInteger(answer?.prediction) || !Array.isArray(answer.probabilities)) {
        $('predict-error').textContent = 'The server sent an unexpected answer.';
        return;
      }
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(blob);
      show(answer, body.model, res.headers.get('x-trace-id'));
    } finally {
      setBusy(button, false);
      button.disabled = !inked;
    }
  }

  function percent(p) {
    const v = p * 100;
    if (v > 99.9 && v < 100) return '>99.9%';
    if (v > 0 && v < 0.1) return '<0.1%';
    return `${v.toFixed(1)}%`;
  }

  function show(answer, model, traceId) {
    $('sent').src = previewUrl;
    $('sent').hidden = false;
    $('digit').textContent = String(answer.prediction);
    $('probability').textContent = `probability ${percent(answer.probability)}`;

    const bars = $('bars');
    bars.replaceChildren();
    answer.probabilities.forEach((p, digit) => {
      const li = document.createElement('li');
      if (digit === answer.prediction) li.className = 'top';
      const label = document.createElement('span');
      label.textContent = String(digit);
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.setAttribute('aria-hidden', 'true');
      const fill = document.createElement('span');
      fill.className = 'fill';
      fill.style.width = `${Math.min(Math.max(p, 0), 1) * 100}%`;
      bar.append(fill);
      const value = document.createElement('span');
      value.className = 'pct';
      value.textContent = percent(p);
      li.append(label, bar, value);
      bars.append(li);
    });

    const trace = $('trace');
    trace.replaceChildren();
    if (traceId && /^[0-9a-f]{32}$/i.test(traceId) && jaegerUi) {
      const a = document.createElement('a');
      a.href = `${jaegerUi}/trace/${traceId}`;
      a.target = '_blank';
      a.rel = 'noopener';
      a.textContent = `trace ${traceId}`;
      trace.append('See this request in Jaeger: ', a);
    } else if (traceId) {
      trace.textContent = `Trace id: ${traceId}`;
    } else {
      trace.textContent = 'No trace id: tracing is off on the server.';
    }
    $('model').textContent = model
      ? `Model ${model.name} v${model.version} (${model.architecture}), weights ${String(model.sha256).slice(0, 12)}…`
      : '';
    $('result').hidden = false;
    $('announce').textContent = `Predicted ${answer.prediction}, probability ${percent(answer.probability)}`;
  }

  $('predict').addEventListener('click', () => {
    pad.toBlob((blob) => {
      if (blob) predict(blob, 'drawing.png');
      else $('predict-error').textContent = 'The drawing could not be exported.';
    }, 'image/png');
  });

  $('file').addEventListener('change', (ev) => {
    const input = ev.target;
    const file = input.files[0];
    if (!file) return;
    predict(file, file.name).finally(() => {
      input.value = ''; // so picking the same file again sends it again
    });
  });

  window.addEventListener('unhandledrejection', (ev) => {
    const target = $('draw-view').hidden ? $('login-error') : $('predict-error');
    target.textContent = `Something went wrong on this page: ${ev.reason}`;
  });

  clearPad();
  $('boot')?.remove();
  showLogin('');
})();
