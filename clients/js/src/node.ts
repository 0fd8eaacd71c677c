import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { CursorStore } from './types.js';

/** Positions in a JSON file (Node): written whole and renamed into place, so a
 *  crash leaves the old file or the new one, never half of one. */
export function fileStore(path: string): CursorStore {
  let data: Record<string, number> = {};
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    // No file yet: no positions.
  }
  return {
    get: (k) => data[k],
    set: (k, v) => {
      data[k] = v;
      writeFileSync(path + '.tmp', JSON.stringify(data));
      renameSync(path + '.tmp', path);
    },
  };
}
