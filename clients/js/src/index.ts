export { createClient, HeraldClient, PresenceWatch, Subscription } from './client.js';
export type { Handler, PresenceHandle } from './client.js';
export { localStorageStore, memoryStore } from './persist.js';
export { HeraldAuthError, HeraldError } from './util.js';
export type * from './types.js';
