import { EngineClient } from "@loophole/ipc";

// An engine someone else started: its port from ports.md's announcement or connection file.
export async function connect(port: number): Promise<void> {
  const client = new EngineClient({ port }, { requestTimeoutMs: 2_000 });
  client.on("state", (s) => console.log("connection", s));
  await client.start();
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 1_000);
  await client.subscribe("transport.state", 10);
  for await (const t of client.telemetry("transport.state", { signal: ac.signal })) {
    console.log(t.playing ? "playing" : "stopped", t.position); // latest value wins
  }
  await client.close(); // goodbye; pending requests settle, none is left hanging
}
