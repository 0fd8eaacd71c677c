import type { CursorStore } from './types.js';

/** Positions in memory: lost with the page or process (the default). */
export function memoryStore(): CursorStore {
  const m = new Map<string, number>();
  return { get: (k) => m.get(k), set: (k, v) => void m.set(k, v) };
}

/** Positions in `localStorage` (a browser page: survives reloads). */
export function localStorageStore(prefix = 'herald:', storage: Storage = globalThis.localStorage): CursorStore {
  return {
    get: (k) => {
      const v = storage.getItem(prefix + k);
      return v === null ? undefined : +v;
    },
    set: (k, v) => storage.setItem(prefix + k, String(v)),
  };
}
