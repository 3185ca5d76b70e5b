import { readFile } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../src/verify/generate.js";
import { cleanupHfDirs, fixtureHfDir, greedyPath, REFERENCE_NAMES, runCli } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

interface Greedy {
  prompt: string;
  input_ids: number[];
  decoder_start_id: number;
  steps: number;
  generated_ids: number[];
}

describe.each(REFERENCE_NAMES)("greedy generation vs the PyTorch reference: %s", (name) => {
  it("tokenizes the prompt through the default chat template and produces exactly the reference tokens", async () => {
    const g = JSON.parse(await readFile(greedyPath(name), "utf8")) as Greedy;
    // The fixture prompt is the rendered OpenBA template; feed generate the user's part only.
    const user = /^<S> (.*) <extra_id_0>$/.exec(g.prompt)?.[1];
    expect(user).toBeDefined();
    const dir = await fixtureHfDir(name);
    const r = await generate(dir, { prompt: user as string, maxNewTokens: g.steps, device: "cpu" });
    // convert writes the default template into tokenizer_config.json; without it the built-in default applies.
    expect(["tokenizer_config.json", "default"]).toContain(r.templateSource);
    // The template ends with the eos token (as apply_chat_template needs), and generate adds none of its own.
    expect(r.renderedPrompt).toBe(`${g.prompt}</s>`);
    expect(r.inputIds).toEqual(g.input_ids);
    expect(r.inputIds.filter((id) => id === 1)).toHaveLength(1);
    expect(r.generatedIds).toEqual(g.generated_ids);
    expect(r.provider).toBe("cpu");
  });
});

describe("megahub generate", () => {
  it("prints the continuation and, under --json, the ids", async () => {
    const name = "fp32-tp1";
    const g = JSON.parse(await readFile(greedyPath(name), "utf8")) as Greedy;
    const dir = await fixtureHfDir(name);
    const r = await runCli(["generate", dir, "--prompt", "The license", "--max-new-tokens", String(g.steps), "--device", "cpu", "--json"]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as { ok: boolean; generatedIds: number[]; text: string };
    expect(json.ok).toBe(true);
    expect(json.generatedIds).toEqual(g.generated_ids);
    expect(typeof json.text).toBe("string");
  });

  it("honours a --chat-template file", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const { writeFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    const file = join(dir, "..", "t.jinja");
    await writeFile(file, "<X> {{ messages[0]['content'] }} <extra_id_1>");
    const r = await generate(dir, { prompt: "The license", maxNewTokens: 1, chatTemplate: file, device: "cpu" });
    expect(r.templateSource).toBe("file");
    expect(r.inputIds[0]).toBe(1102); // <X>
    // Like transformers' apply_chat_template(tokenize=True): no special tokens beyond what the template writes.
    expect(r.inputIds.at(-1)).toBe(1098); // <extra_id_1>, and no </s> the template did not write
  });
});
