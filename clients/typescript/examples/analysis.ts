import { EngineSupervisor } from "@loophole/ipc";

// signal's tap 2 is a 1 kHz sine at -6 dBFS (`signal --help` lists the taps).
export async function analysis(binary: string): Promise<string[]> {
  const engine = new EngineSupervisor({ spawn: { binary } });
  const client = await engine.start(); // asks for binary attachments by default
  const seen: string[] = [`taps ${client.taps}, attachments ${client.attachments}`];
  const spectrum = new Promise<void>((done) =>
    client.once("spectrum", (s) => { // s.db: Float32Array (a view of the frame), dBFS, linear bins
      const k = s.db.indexOf(Math.max(...s.db));
      seen.push(`peak ${Math.round(k * s.hzPerBin)} Hz ${s.db[k]!.toFixed(1)} dB`);
      done();
    }),
  );
  const scope = new Promise<void>((done) =>
    client.once("scope", (s) => done(void seen.push(`scope ${Math.min(...s.min).toFixed(2)} .. ${Math.max(...s.max).toFixed(2)}`))),
  );
  try {
    await client.subscribe("spectrum", { tap: 2, bins: 1024, rateHz: 30 }); // re-sent after reconnects
    await client.subscribe("scope", { tap: 2, points: 512, rateHz: 30 });
    await Promise.all([spectrum, scope]);
  } finally {
    await engine.stop(); // also when a subscribe is refused (out_of_range: fewer taps)
  }
  return seen;
}
