// ESM entry: a thin wrapper over the one CommonJS implementation (as `ws` does), so both
// `import` and `require` get the same classes and `instanceof EngineError` holds across them.
import cjs from "./dist/index.js";

export const {
  EngineClient,
  EngineSupervisor,
  EngineError,
  ProtocolError,
  FrameReader,
  PREFACE,
  HEADER_LEN,
  ENCODING_JSON,
  isU32,
  ENGINE_MAX_PAYLOAD,
  PRE_WELCOME_MAX_PAYLOAD,
  encodeCommand,
  encodeFrame,
  commandJson,
  EncodeError,
  backoffDelay,
  parseAnnouncement,
  LISTEN_PREFIX,
  TOKEN_ENV,
  EngineStartError,
  KNOWN_ERROR_CODES,
  CLIENT_ERROR_CODES,
  ERROR_CODE_PATTERN,
  TELEMETRY_STREAMS,
  COMMAND_REPLIES,
  COMMAND_FIELDS,
} = cjs;
export default cjs;
