export * from "./generated";
export * from "./errors";
export * from "./codec";
export * from "./analysis";
export * from "./client";
export * from "./supervisor";
