import { describe, expect, it } from "vitest";
import { COMMANDS, SUMMARIES } from "./index.js";

describe("command table", () => {
  it("lists a summary for every command, equal to the command's own (help reads them without loading commands)", async () => {
    expect(Object.keys(SUMMARIES).sort()).toEqual(Object.keys(COMMANDS).sort());
    for (const [name, load] of Object.entries(COMMANDS)) {
      const c = await load();
      expect(c.name, name).toBe(name);
      expect(SUMMARIES[name], name).toBe(c.summary);
    }
  });
});
