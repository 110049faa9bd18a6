// The controller's server-sent events, read with fetch (EventSource cannot send the
// token header), reconnected with a growing pause whenever the stream ends.

import { authHeaders } from "./api.js";

function parse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a keepalive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

/**
 * Follow /v1/stream: onEvent(name, data) for each event ("hello" after each
 * (re)connection: what came meanwhile is unknown, so everything is read again),
 * onStatus("live" | "reconnecting" | "denied"). Returns {stop()}.
 */
export function follow({ onEvent, onStatus }) {
  let stopped = false;
  let controller = null;

  async function once() {
    controller = new AbortController();
    const response = await fetch("/v1/stream", {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      signal: controller.signal,
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) return "denied";
    if (!response.ok || !response.body) return "failed";
    onStatus("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parse(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message) onEvent(message.event, message.data);
      }
    }
  }

  (async () => {
    let pause = 250;
    while (!stopped) {
      let outcome;
      try {
        outcome = await once();
        if (outcome === "ended") pause = 250;
      } catch {
        outcome = "failed";
      }
      if (stopped) return;
      if (outcome === "denied") {
        onStatus("denied");
        return;
      }
      onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 5000);
    }
  })();

  return {
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}
