// Polling: every view refreshes its data on a timer that stops with the view.

import { ApiError, isAbort } from "./api.js";

/**
 * Run fn now and then every `every` ms (timer re-armed after each run, so runs never
 * overlap) until signal aborts. Returns {kick()} to refresh immediately.
 */
export function poll(fn, every, signal) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    if (signal.aborted) return;
    clearTimeout(timer);
    running = true;
    try {
      await fn();
    } catch (err) {
      if (!isAbort(err) && !(err instanceof ApiError)) console.error(err);
    } finally {
      running = false;
    }
    if (signal.aborted) return;
    if (again) {
      again = false;
      run();
      return;
    }
    timer = setTimeout(run, typeof every === "function" ? every() : every);
  };
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  run();
  return {
    kick() {
      if (running) again = true;
      else run();
    },
  };
}
