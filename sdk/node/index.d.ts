// Types for shs-sdk (index.js).
/// <reference types="node" />

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** An event as a handler receives it. */
export interface ShsEvent<P = any> {
  /** A unique id (a UUID). */
  id: string;
  /** The event type, e.g. `user.created`. */
  type: string;
  /** Who published it: `/functions/NAME`, the HTTP client's `source`, or `/http`. */
  source: string;
  /** When it was published, RFC 3339. */
  time: string;
  /** The event's data (`null` when there was none, or when it is bytes: see `data_base64`). */
  payload: P;
  /** The data's content type (`application/json` unless the publisher said otherwise). */
  datacontenttype?: string;
  /** The data when it is bytes (neither JSON nor UTF-8 text), in base64; see `eventData`. */
  data_base64?: string;
  /** Every other CloudEvents attribute: `specversion`, `shshops`, extensions... */
  [attribute: string]: unknown;
}

/** The data whatever its content type: a Buffer for `data_base64`, else the payload. */
export function eventData<P = any>(event: ShsEvent<P>): Buffer | P;

/** One subscriber that did not take an event. */
export interface DeliveryFailure {
  function: string;
  message: string;
}

/** The supervisor's answer to a publish. */
export interface PublishResult {
  published: true;
  event_id: string;
  /** How many subscribing functions took the event. */
  delivered: number;
  /** Each subscriber that did not, and each failure further down the chain. */
  errors: DeliveryFailure[];
}

/** The HTTP request an invoke came with (`ctx.http`). */
export class Request {
  /** The method (HEAD arrives as GET). */
  readonly method: string;
  /** The path after /run/NAME; '/' when none. */
  readonly path: string;
  /** The raw query string, without '?'. */
  readonly query: string;
  /** Lower-case names; repeated values joined with ', '. */
  readonly headers: Record<string, string>;
  /** The raw body (empty for a JSON body unless rawBody was asked for). */
  readonly body: Buffer;
  /** The client's IP address. */
  readonly remoteAddr: string | null;
  /** A header's value, by name in any case. */
  header(name: string): string | undefined;
  /** The body as UTF-8 text. */
  readonly text: string;
  /** The query's parameters (the last value of each). */
  readonly args: Record<string, string>;
  /** The fields of an application/x-www-form-urlencoded body (the last value of each); {} otherwise. */
  readonly form: Record<string, string>;
}

/** An HTTP answer: return it from an invoke handler. */
export class Response {
  constructor(
    body?: string | Uint8Array | Json,
    options?: { status?: number; headers?: Record<string, string | string[]>; contentType?: string },
  );
  /** A redirect to `location` (302 unless told). */
  static redirect(location: string, status?: number): Response;
  /** The {http_response: {...}} result this stands for. */
  toJSON(): { http_response: Json };
}

/** One server-sent event as text. */
export function sseEvent(data: unknown, options?: { event?: string; id?: string; retry?: number }): string;

/** The request being handled, and the way to talk to the supervisor while handling it. */
export class Context {
  /** The HTTP request of an invoke made over HTTP; null otherwise. */
  readonly http: Request | null;
  /** For an occurrence of a schedule: its cron expression and time (RFC 3339); null otherwise. */
  readonly schedule: { cron: string; time: string } | null;
  /** Aborted when the HTTP client went away (the supervisor sent cancel). */
  readonly signal: AbortSignal;
  /** Whether the HTTP client went away. */
  readonly cancelled: boolean;
  /** Sends a chunk of a streamed answer now; the first may set status and headers. */
  stream(chunk: string | Uint8Array, options?: { status?: number; headers?: Record<string, string | string[]> }): void;
  /** Sends one server-sent event; the first starts a text/event-stream answer. */
  sse(data: unknown, options?: { event?: string; id?: string; retry?: number }): void;
  /** The request's id (for an HTTP invoke, its X-Request-Id); null in setup. */
  readonly requestId: string | null;
  /** The function's name. */
  readonly function: string | null;
  /** What is being handled. */
  readonly method: 'invoke' | 'event' | 'initialize';
  /** Publishes an event and waits until every subscriber has taken it (or failed). */
  publish(type: string, payload?: unknown): Promise<PublishResult>;
  /** Publishes an event without waiting for anything (fire-and-forget). */
  publishNoWait(type: string, payload?: unknown): void;
  /** Subscribes the function to an event type or pattern. */
  subscribe(pattern: string): Promise<{ subscribed: true; type: string }>;
  /** Drops the subscription to exactly this pattern. */
  unsubscribe(pattern: string): Promise<{ unsubscribed: true; type: string }>;
  /** Writes one line to the function's log (stderr), formatted like console.log. */
  log(...parts: unknown[]): void;
}

/** An error to answer with: POST /run answers 500 with its code, message and data. */
export class ShsError extends Error {
  constructor(message: string, options?: { code?: number; data?: unknown });
  code: number;
  data?: unknown;
  toJSON(): { code: number; message: string; data?: unknown };
}

export type InvokeHandler<I = any, O = unknown> = (input: I, ctx: Context) => O | Promise<O>;
export type EventHandler<P = any> = (event: ShsEvent<P>, ctx: Context) => unknown;
export type SetupHandler = (ctx: Context) => void | Promise<void>;

export interface Streams {
  input?: NodeJS.ReadableStream;
  output?: NodeJS.WritableStream;
  log?: NodeJS.WritableStream;
}

export interface FunctionOptions {
  /** Event types or patterns to subscribe to at start-up. */
  subscribe?: string[];
  /** Whether on(type) subscribes to type at start-up (default true). */
  autoSubscribe?: boolean;
  /** Get the raw body of HTTP requests even when it is JSON (default false). */
  rawBody?: boolean;
  /**
   * Requests it takes at once, declared to shs in the answer to initialize (default 16, at
   * most 65536; a `concurrency` in function.toml wins).
   */
  concurrency?: number;
}

/** A function: its handlers and subscriptions. */
export class ShsFunction {
  constructor(options?: FunctionOptions);
  /** Handles POST /run/NAME. */
  invoke<I = any, O = unknown>(handler: InvokeHandler<I, O>): this;
  /** Handles events of exactly this type (or these types); subscribes at start-up unless told not to. */
  on<P = any>(types: string | string[], handler: EventHandler<P>, options?: { subscribe?: boolean }): this;
  /** Handles every event no on(type) handler takes. */
  onAny<P = any>(handler: EventHandler<P>): this;
  /** Subscribes to these event types or patterns at start-up. */
  subscribe(...patterns: string[]): this;
  /** Runs at start-up, before initialize is answered. */
  setup(handler: SetupHandler): this;
  /** Serves over stdin and stdout until stdin closes, then exits (0, or 1 if start-up failed). */
  run(): Promise<void>;
  /** Serves over the given streams until the end of input; resolves to the exit status. */
  serve(streams?: Streams): Promise<number>;
}

/** Creates a function object. */
export function createFunction(options?: FunctionOptions): ShsFunction;

// The module-level API works on one default function.
export function invoke<I = any, O = unknown>(handler: InvokeHandler<I, O>): ShsFunction;
export function on<P = any>(types: string | string[], handler: EventHandler<P>, options?: { subscribe?: boolean }): ShsFunction;
export function onAny<P = any>(handler: EventHandler<P>): ShsFunction;
export function subscribe(...patterns: string[]): ShsFunction;
export function setup(handler: SetupHandler): ShsFunction;
export function run(): Promise<void>;
export function serve(streams?: Streams): Promise<number>;
/** Writes one line to the function's log (stderr), formatted like console.log. */
export function log(...parts: unknown[]): void;

/**
 * The value of secret `name`, from the folder `$SHS_SECRETS` (the secrets named in
 * `secrets = [...]` of function.toml). Throws an `ShsError` when there is no such secret.
 */
export function secret(name: string): string;

export const FUNCTION_ERROR: -32000;
export const INVALID_PARAMS: -32602;
export const METHOD_NOT_FOUND: -32601;
