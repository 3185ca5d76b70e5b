/**
 * torch's own DCP reader (torch 2.13: dcp.load with no_dist and dcp_to_torch_save) reads the torch_dist checkpoints
 * megahub writes equal to their sources: the fixture written by torch's DCP writer, re-split by megahub to other
 * TP × PP, gives the same global tensors; a legacy checkpoint written as torch_dist gives its layers stacked under
 * Transformer Engine names; common.pt, metadata.json and the _extra_state objects load as Megatron expects them.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { reshardAny } from "../src/ops/dispatch.js";
import { chunkLayout, dcpDir, PY_DCP_PRELUDE } from "./helpers/dcp.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";
const work = mkdtempSync(join(tmpdir(), "megahub-dist-torch-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);

type Shas = Record<string, { dtype: string; shape: number[]; sha256: string }>;

/**
 * For each directory: every model tensor (no optimizer./rng_state/_extra_state key) as torch's dcp.load gives it
 * (checked equal to dcp_to_torch_save), and every _extra_state object torch.load-ed from its byte range.
 */
function torchModel(dirs: string[]): { tensors: Shas; extra: Record<string, string> }[] {
  const code = `${PY_DCP_PRELUDE}
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
res = []
for i, d in enumerate(sys.argv[1:]):
    md = dcp.FileSystemReader(d).read_metadata()
    pre = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
    dcp.load(pre, storage_reader=dcp.FileSystemReader(d), no_dist=True)
    pt = os.path.join(os.path.dirname(d.rstrip('/')), f'whole{i}.pt')
    dcp_to_torch_save(d, pt)
    saved = torch.load(pt, weights_only=False)
    os.remove(pt)
    tensors, extra = {}, {}
    for k, t in pre.items():
        assert sha(t) == sha(saved[k]), k
        if k.startswith('optimizer.') or k.startswith('rng_state') or '_extra_state' in k: continue
        tensors[k] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'sha256': sha(t)}
    for k, v in md.state_dict_metadata.items():
        if '_extra_state' in k and not isinstance(v, TensorStorageMetadata):
            obj = saved[k]
            extra[k] = repr(obj.getvalue() if isinstance(obj, io.BytesIO) else obj)
    res.append({'tensors': tensors, 'extra': extra})
print(json.dumps(res))
`;
  return JSON.parse(runRefPython(code, dirs)) as { tensors: Shas; extra: Record<string, string> }[];
}

describe.skipIf(!HAS_REF)(`torch's DCP reader reads megahub's torch_dist${NO_REF}`, () => {
  it("the torch-written fixture re-split to TP1 PP1, TP4 PP2 and TP2 PP2 gives the same global tensors", async () => {
    const layouts = [
      { tp: 1, pp: 1 },
      { tp: 4, pp: 2 },
      { tp: 2, pp: 2 },
    ];
    const dirs: string[] = [];
    for (const l of layouts) {
      const dir = out();
      await reshardAny({ input: fixture("dcp", "gpt-tp2-pp2"), out: dir, ...l, format: "torch_dist" });
      dirs.push(join(dir, "iter_0000010"));
    }
    const [source, ...ours] = torchModel([dcpDir("gpt-tp2-pp2"), ...dirs]);
    expect(Object.keys(source?.tensors ?? {}).length).toBe(9);
    for (const o of ours) {
      expect(o.tensors).toEqual(source?.tensors);
      // The source's _extra_state modules come back (a strict load expects the same set), each [None].
      expect(Object.keys(o.extra).sort()).toEqual(Object.keys(source?.extra ?? {}).sort());
      expect(new Set(Object.values(o.extra))).toEqual(new Set(["[None]"]));
    }
  });

  it.skipIf(!hasFixture("gpt", "llama-tp1"))("a legacy checkpoint written as torch_dist holds its layers stacked under TE names, bit for bit", async () => {
    const dir = out();
    await reshardAny({ input: fixture("gpt", "llama-tp1"), out: dir, tp: 2, pp: 2, format: "torch_dist" });
    const iter = join(dir, "iter_0000100");
    const expected = runRefPython(
      `${PY_DCP_PRELUDE}
sys.path.insert(0, 'scripts'); import fixturelib; fixturelib.install_megatron_stub()
import glob
src, iter_dir = sys.argv[1], sys.argv[2]
m = torch.load(glob.glob(os.path.join(src, 'iter_*', 'mp_rank_00', 'model_optim_rng.pt'))[0], map_location='cpu', weights_only=False)['model']
rename = {'input_layernorm.': 'self_attention.linear_qkv.layer_norm_', 'pre_mlp_layernorm.': 'mlp.linear_fc1.layer_norm_'}
layers, out = {}, {}
for k, t in m.items():
    if t is None or not isinstance(t, torch.Tensor) or '_extra_state' in k: continue
    parts = k.split('.')
    if k.startswith('decoder.layers.'):
        p = '.'.join(parts[3:])
        for a, b in rename.items():
            if p.startswith(a): p = b + p[len(a):]
        layers.setdefault('decoder.layers.' + p, {})[int(parts[2])] = t
    else:
        out[k] = t
for k, per in layers.items():
    out[k] = torch.stack([per[i] for i in range(len(per))])
common = torch.load(os.path.join(iter_dir, 'common.pt'), weights_only=False)
a = common['args']
cfg = json.load(open(os.path.join(iter_dir, 'metadata.json')))
print(json.dumps({'tensors': {k: {'dtype': DT[t.dtype], 'shape': list(t.shape), 'sha256': sha(t)} for k, t in out.items()},
  'common': [common['iteration'], common['checkpoint_version'], a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.ckpt_format, a.padded_vocab_size, sorted(common['content_metadata'].items())],
  'config': cfg}))
`,
      [fixture("gpt", "llama-tp1"), iter],
    );
    const want = JSON.parse(expected) as { tensors: Shas; common: unknown[]; config: unknown };
    const [got] = torchModel([iter]);
    expect(got?.tensors).toEqual(want.tensors);
    expect(want.common).toEqual([100, 3, 2, 2, "torch_dist", 256, [["chained_optim_avoid_prefix", true], ["singleton_local_shards", false]]]);
    expect(want.config).toEqual({ sharded_backend: "torch_dist", sharded_backend_version: 1 });
  });
});

describe("megahub's torch_dist layout is Megatron-Core's", () => {
  it("at TP2 PP2 every model key has the fixture's chunks, each in the data file of the rank that writes it", async () => {
    const dir = out();
    await reshardAny({ input: fixture("dcp", "gpt-tp2-pp2"), out: dir, tp: 2, pp: 2, format: "torch_dist" });
    const ours = await chunkLayout(join(dir, "iter_0000010"));
    const theirs = await chunkLayout(dcpDir("gpt-tp2-pp2"));
    expect(ours.rows).toEqual(theirs.rows);
    expect(ours.rows.length).toBe(2 + 4 * 12 + 1 + 2); // embedding, 4 layers × (2 norms, 2 QKV, 2 proj, 4 fc1, 2 fc2), final norm, head
    expect(ours.extra).toEqual(theirs.extra);
  });
});
