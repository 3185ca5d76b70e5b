import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { MegahubError } from "../../errors.js";

/**
 * Where counted texts go: in this thread, or spread over worker threads. Counts are integers added up, so the
 * order in which workers finish cannot change the result.
 */
export interface CountSink {
  /** Counts these texts (one sentencepiece call each); resolves when there is room for more. */
  add(texts: readonly string[]): Promise<void>;
  /** Waits for everything sent and returns the summed counts and their total. */
  finish(): Promise<{ counts: Float64Array; tokens: number }>;
  /** Stops the workers (after an error elsewhere). */
  close(): Promise<void>;
}

/** A sink in this thread, around an encoder's `countInto`. */
export function inlineSink(spSize: number, countInto: (text: string, counts: Float64Array) => number): CountSink {
  const counts = new Float64Array(spSize);
  let tokens = 0;
  return {
    add(texts) {
      for (const t of texts) tokens += countInto(t, counts);
      return Promise.resolve();
    },
    finish: () => Promise.resolve({ counts, tokens }),
    close: () => Promise.resolve(),
  };
}

// The worker runs the same loop as vocab-count.ts's countInto, on its own WASM instance of the same package. It is
// CommonJS code given as a string, so no extra file has to be found next to the compiled module.
const WORKER_CODE = `
const { parentPort, workerData } = require("node:worker_threads");
const { SentencePieceProcessor } = require(workerData.pkg);
(async () => {
  const sp = new SentencePieceProcessor();
  await sp.load(workerData.model);
  const M = sp.sentencepiece, P = sp.processor;
  const st = P.status(); const ok = st.ToString(); st.delete();
  if (ok !== "OK") { parentPort.postMessage({ error: "sentencepiece cannot load the model: " + ok }); return; }
  const counts = new Float64Array(workerData.spSize);
  parentPort.on("message", (texts) => {
    if (texts === null) { parentPort.postMessage({ counts }, [counts.buffer]); return; }
    let n = 0;
    for (const text of texts) {
      if (text.length === 0) continue;
      const sv = new M.StringView(text); const view = sv.getView(); const ids = P.EncodeAsIds(view);
      const k = ids.size();
      for (let i = 0; i < k; i++) counts[ids.get(i)]++;
      n += k; ids.delete(); view.delete(); sv.delete();
    }
    parentPort.postMessage({ n });
  });
  parentPort.postMessage({ ready: true });
})().catch((e) => parentPort.postMessage({ error: String(e && e.message || e) }));
`;

type WorkerMessage = { ready: true } | { n: number } | { counts: Float64Array } | { error: string };

/**
 * A sink over `threads` worker threads, each with its own sentencepiece instance. Texts go out in batches of about
 * 64 KiB round-robin, at most two batches per worker in flight, so memory stays bounded however large the corpus.
 */
export async function workerSink(modelPath: string, spSize: number, threads: number): Promise<CountSink> {
  const pkg = createRequire(import.meta.url).resolve("@agnai/sentencepiece-js");
  const workers = Array.from({ length: threads }, () => new Worker(WORKER_CODE, { eval: true, workerData: { pkg, model: modelPath, spSize } }));
  let failure: Error | undefined;
  let tokens = 0;
  let inFlight = 0;
  let wake: (() => void) | undefined;
  const finals: Promise<Float64Array>[] = [];
  let rejectFailed: (e: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => (rejectFailed = reject));
  failed.catch(() => undefined); // observed through Promise.race in finish(); never an unhandled rejection
  const fail = (e: Error) => {
    failure ??= e;
    rejectFailed(e);
    wake?.();
  };
  const ready = workers.map(
    (w) =>
      new Promise<void>((resolveReady) => {
        w.on("error", fail);
        w.on("message", (m: WorkerMessage) => {
          if ("ready" in m) resolveReady();
          else if ("error" in m) {
            fail(new MegahubError("FORMAT", m.error, { file: modelPath }));
            resolveReady();
          } else if ("n" in m) {
            tokens += m.n;
            inFlight--;
            wake?.();
          }
        });
      }),
  );
  const close = async () => {
    await Promise.all(workers.map((w) => w.terminate()));
  };
  await Promise.all(ready);
  if (failure) {
    await close();
    throw failure;
  }
  const waitBelow = async (limit: number) => {
    while (inFlight > limit && !failure) await new Promise<void>((r) => (wake = r));
    if (failure) throw failure;
  };
  let next = 0;
  const send = async (batch: string[]) => {
    await waitBelow(2 * threads - 1);
    inFlight++;
    (workers[next++ % threads] as Worker).postMessage(batch);
  };
  return {
    async add(texts) {
      let batch: string[] = [];
      let chars = 0;
      for (const t of texts) {
        batch.push(t);
        chars += t.length;
        if (chars >= 1 << 16) {
          await send(batch);
          batch = [];
          chars = 0;
        }
      }
      if (batch.length > 0) await send(batch);
    },
    async finish() {
      try {
        await waitBelow(0);
        for (const w of workers) {
          finals.push(
            new Promise<Float64Array>((r) => {
              w.on("message", (m: WorkerMessage) => {
                if ("counts" in m) r(m.counts);
              });
            }),
          );
          w.postMessage(null);
        }
        const parts = await Promise.race([Promise.all(finals), failed]);
        const counts = new Float64Array(spSize);
        for (const p of parts) for (let i = 0; i < spSize; i++) counts[i] = (counts[i] as number) + (p[i] as number);
        return { counts, tokens };
      } finally {
        await close();
      }
    },
    close,
  };
}
