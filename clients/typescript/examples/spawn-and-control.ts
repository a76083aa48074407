import { EngineSupervisor, EngineError } from "@loophole/ipc";

export async function main(binary: string): Promise<void> {
  const engine = new EngineSupervisor({ spawn: { binary } }); // token goes in the env, never argv
  const client = await engine.start(); // spawn, read LOOPHOLE_LISTEN, handshake
  client.on("engineRestarted", () => console.log("new engine process: push the project state"));
  client.onTelemetry("meters", (m) => console.log("peak", m.peak[0]));
  await client.subscribe("meters", 30); // re-subscribed by itself after every reconnect
  const ack = await client.request("param.set", { node: 2, param: 0, value: 0.5 });
  console.log("applied at sample", ack.sample);
  try {
    await client.request("param.set", { node: 99, param: 0, value: 1 });
  } catch (e) {
    if (e instanceof EngineError) console.log(e.code); // "unknown_node"
  }
  await engine.stop(); // engine.shutdown, then SIGTERM, then SIGKILL
}
