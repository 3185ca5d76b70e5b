import { describe, expect, it } from "vitest";
import { COMMANDS } from "./index.js";
import { SUMMARIES } from "./summaries.js";

describe("command table", () => {
  it("registers every command under its own name, with the summary help prints without loading it", async () => {
    for (const [key, load] of Object.entries(COMMANDS)) {
      const c = await load();
      expect(c.name, key).toBe(key);
      expect(c.summary, key).toBe(SUMMARIES[key as keyof typeof SUMMARIES]);
    }
  });
});
