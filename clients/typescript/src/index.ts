export * from "./generated";
export * from "./errors";
export * from "./codec";
export * from "./client";
export * from "./supervisor";
