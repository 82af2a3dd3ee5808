// Type declarations for netwine.js (netwine-client 0.1.0).

export type TransportName = 'websocket' | 'stream' | 'poll';
export type ReadyState = 0 | 1 | 2 | 3;

export interface SocketOptions {
  /** Where the tunnel goes: "host:port", "[v6]:port" or a target name such as "demo". */
  target: string;
  /** Transports to use, in order of preference (default: websocket, stream, poll). */
  transports?: TransportName[] | TransportName | 'auto';
  /** Type of binary message data (default 'arraybuffer'). */
  binaryType?: BinaryType;
  /** Deliver messages as strings, the byte stream decoded as UTF-8 (default false). */
  text?: boolean;
  /** Acknowledge downstream bytes at least this often, in bytes (default 128 KiB). */
  ackEvery?: number;
  /** Acknowledge the rest of a burst after this quiet time, in ms (default 250). */
  ackDelay?: number;
  /** Largest HTTP send body, in bytes (default 768 KiB; halved on a 413). */
  maxSend?: number;
  /** Bytes per WebSocket upstream message (default 256 KiB). */
  wsChunk?: number;
  /** Pause writing to a WebSocket whose buffer holds this much (default 4 MiB). */
  wsHighWater?: number;
  /** Most upstream bytes on a WebSocket not yet acknowledged by the server
   *  (default 256 KiB; keep it under half of the server's --session-buffer). */
  wsWindow?: number;
  /** Give up re-attaching after this long without a transport, in ms (default 45000). */
  resumeTimeout?: number;
  /** close() gives up (1006) when nothing reaches the server for this long, in ms (default 10000). */
  closeTimeout?: number;
  /** A WebSocket not open within this long counts as blocked, in ms (default 6000). */
  wsOpenTimeout?: number;
  /** An open not answered within this long fails, in ms (default 20000). */
  openTimeout?: number;
  /** A stream silent this long is dead, in ms (default 40000). */
  streamTimeout?: number;
  /** A poll or send unanswered this long is dead, in ms (default 40000). */
  pollTimeout?: number;
  /** Move an HTTP session onto a WebSocket when 'websocket' is listed (default true). */
  upgrade?: boolean;
  /** Wait before retrying a failed WebSocket upgrade, in ms, doubling (default 30000). */
  upgradeDelay?: number;
  /** Stop trying WebSocket upgrades after this many failures (default 4). */
  upgradeAttempts?: number;
  /** Send base64 bodies over HTTP (default: only without binary XHR). */
  base64Send?: boolean | null;
  /** Log transport decisions to the console (default false). */
  debug?: boolean;
  /** A WebSocket constructor instead of the global one (Node: the ws package). */
  WebSocket?: new (url: string, protocol: string) => unknown;
  /** An XMLHttpRequest constructor instead of the global one. */
  XMLHttpRequest?: new () => unknown;
}

export interface NetwineEvent {
  readonly type: string;
  readonly target: Socket;
  readonly currentTarget: Socket;
  readonly timeStamp: number;
  stopImmediatePropagation(): void;
}

export interface NetwineMessageEvent extends NetwineEvent {
  readonly type: 'message';
  /** ArrayBuffer or Blob (binaryType), or string with the text option. One received chunk. */
  readonly data: ArrayBuffer | Blob | string;
  readonly origin: string;
}

export interface NetwineCloseEvent extends NetwineEvent {
  readonly type: 'close';
  /** 1000 normal; 1001 server shutting down; 1006 connection lost; 1008 not allowed;
   *  1011 target unreachable or failed; 4001 session expired; others per PROTOCOL.md. */
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
}

export interface NetwineErrorEvent extends NetwineEvent {
  readonly type: 'error';
  readonly message: string;
  readonly code: number;
}

export interface TransportChangeEvent extends NetwineEvent {
  readonly type: 'transportchange';
  readonly transport: TransportName;
  readonly previous: TransportName | null;
}

export interface SocketEventMap {
  open: NetwineEvent;
  message: NetwineMessageEvent;
  error: NetwineErrorEvent;
  close: NetwineCloseEvent;
  transportchange: TransportChangeEvent;
}

type Listener<E> = ((this: Socket, ev: E) => unknown) | { handleEvent(ev: E): unknown };

export class Socket {
  /** url: the tunnel prefix, e.g. "/netwine" or "https://host:8080/netwine". */
  constructor(url: string, options: SocketOptions | string);

  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;

  /** The tunnel prefix as an absolute http(s) URL. */
  readonly url: string;
  readonly target: string;
  readonly readyState: ReadyState;
  /** Bytes given to send() that netwine has not acknowledged yet. */
  readonly bufferedAmount: number;
  /** The transport carrying the session, null before it opens. */
  readonly transport: TransportName | null;
  /** Whether messages are strings (the text option). */
  readonly text: boolean;
  readonly protocol: string;
  readonly extensions: string;
  binaryType: BinaryType;

  onopen: ((this: Socket, ev: NetwineEvent) => unknown) | null;
  onmessage: ((this: Socket, ev: NetwineMessageEvent) => unknown) | null;
  onerror: ((this: Socket, ev: NetwineErrorEvent) => unknown) | null;
  onclose: ((this: Socket, ev: NetwineCloseEvent) => unknown) | null;
  ontransportchange: ((this: Socket, ev: TransportChangeEvent) => unknown) | null;

  /** Strings are sent as UTF-8. Data sent before open is queued. Order is kept, Blobs included. */
  send(data: string | ArrayBuffer | ArrayBufferView | Blob): void;
  /** code: 1000 or 3000-4999; reason: at most 123 bytes of UTF-8. Data already sent is delivered first. */
  close(code?: number, reason?: string): void;

  addEventListener<K extends keyof SocketEventMap>(type: K, listener: Listener<SocketEventMap[K]>,
    options?: { once?: boolean } | boolean): void;
  removeEventListener<K extends keyof SocketEventMap>(type: K, listener: Listener<SocketEventMap[K]>): void;
  dispatchEvent(ev: { type: string }): boolean;
}

export const CONNECTING: 0;
export const OPEN: 1;
export const CLOSING: 2;
export const CLOSED: 3;
export const version: string;
export const transports: TransportName[];

declare const Netwine: {
  Socket: typeof Socket;
  CONNECTING: 0;
  OPEN: 1;
  CLOSING: 2;
  CLOSED: 3;
  version: string;
  transports: TransportName[];
  defaults: Required<Omit<SocketOptions, 'target'>>;
};
export default Netwine;

/** The global `Netwine` a page gets from <script src="/netwine.js">. */
export as namespace Netwine;
