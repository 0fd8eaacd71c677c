/** An error from the server (its `code`: `invalid`, `forbidden`, …) or from
 *  the client itself (`offline`, `queue_full`, `expired`, `closed`,
 *  `disconnected`, `timeout`). */
export class HeraldError extends Error {
  constructor(readonly code: string, message: string, readonly status?: number) {
    super(message);
    this.name = 'HeraldError';
  }
}

/** The token was refused, and a fresh one (if `getToken` can give one) was
 *  refused too: the client stops rather than retry forever. */
export class HeraldAuthError extends HeraldError {
  constructor(message: string) {
    super('unauthenticated', message, 401);
    this.name = 'HeraldAuthError';
  }
}

export const err = (code: string, message: string, status?: number): HeraldError =>
  code === 'unauthenticated' ? new HeraldAuthError(message) : new HeraldError(code, message, status);

type Listener = (value: any) => void;

/** A minimal typed event emitter: `on` returns its own unsubscribe. */
export class Emitter<E> {
  private ls: { [K in keyof E]?: Listener[] } = {};
  on<K extends keyof E>(name: K, fn: (value: E[K]) => void): () => void {
    (this.ls[name] ||= []).push(fn);
    return () => {
      const l = this.ls[name];
      if (l) l.splice(l.indexOf(fn) >>> 0, 1);
    };
  }
  /** @internal */
  emit<K extends keyof E>(name: K, value: E[K]): void {
    for (const fn of (this.ls[name] || []).slice()) {
      try {
        fn(value);
      } catch (e) {
        // A throwing listener must not break delivery to the others.
        setTimeout(() => { throw e; });
      }
    }
  }
}

/** A random UUID: idempotency keys and presence client ids. */
export function uuid(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b: Uint8Array = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 15) | 64;
  b[8] = (b[8]! & 63) | 128;
  const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The `exp` claim (unix seconds) of a JWT, if it has a readable one. */
export function jwtExp(token: string | undefined): number | undefined {
  try {
    const p = token!.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(p)).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
