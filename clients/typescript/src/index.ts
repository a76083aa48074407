export * from "./generated";
export * from "./errors";
export * from "./codec";
