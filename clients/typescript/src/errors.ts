import type { ErrorCode } from "./generated";

/**
 * Codes this client gives a request that did not get an answer from the engine:
 * - `not_sent`: the command never left this process (not connected, closed, queue full, too big,
 *   a value the protocol cannot carry). Safe to retry.
 * - `outcome_unknown`: it was written, then the connection ended before its answer. The engine
 *   may or may not have applied it (read the snapshot telemetry after reconnecting).
 * - `timeout`: no answer within the request's timeout. Outcome unknown too; a late answer is ignored.
 * - `aborted`: the caller's AbortSignal fired. If it had been sent, the outcome is unknown.
 */
export const CLIENT_ERROR_CODES = ["not_sent", "outcome_unknown", "timeout", "aborted"] as const;
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

/**
 * The one error type every request rejects with. `code` is the engine's code (errors.md) when the
 * engine answered `error`, otherwise one of {@link ClientErrorCode}. `fromEngine` tells which.
 */
export class EngineError extends Error {
  override readonly name = "EngineError";
  /** The engine's error code, or this client's own (see {@link ClientErrorCode}). */
  readonly code: ErrorCode | ClientErrorCode;
  /** True when the engine sent this error frame; false when the client produced it. */
  readonly fromEngine: boolean;
  /** The command that failed, when the error answers one. */
  readonly command: string | undefined;

  constructor(code: ErrorCode | ClientErrorCode, message: string, opts: { fromEngine?: boolean; command?: string; cause?: unknown } = {}) {
    super(`${code}: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.fromEngine = opts.fromEngine ?? false;
    this.command = opts.command;
  }
}

/** Why the reader refused the engine's bytes. Every one of them ends the connection. */
export type ProtocolErrorCode =
  | "bad_preface"
  | "frame_too_large"
  | "bad_header"
  | "unsupported_encoding"
  | "invalid_json"
  | "invalid_utf8"
  | "invalid_envelope"
  /** ATTACHMENT flag and `attachment` member disagree, or the member's format/bytes are wrong. */
  | "bad_attachment";

/** The peer broke the framing or envelope rules; the connection must be closed. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
