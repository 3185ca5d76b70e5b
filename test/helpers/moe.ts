/** Shared MoE referee scripts (Debian torch 1.13 through test/helpers/torch.ts runPython). */

/**
 * Written rank files, as torch loads them, hold what the Megatron-layout fixture of the same layout holds: the same
 * weight keys per rank (local-spec files: `_extra_state` keys too), tensors equal (real vocabulary rows), args
 * naming the layout and the MoE facts.
 */
export const SAME_LAYOUT = `import os, glob, sys, torch
sys.path.insert(0, 'scripts'); import fixturelib; fixturelib.install_megatron_stub()
def load(root):
    it = open(os.path.join(root, 'latest_checkpointed_iteration.txt')).read().strip()
    d = os.path.join(root, 'iter_%07d' % int(it))
    return {os.path.basename(os.path.dirname(f)): torch.load(f, map_location='cpu', weights_only=False) for f in sorted(glob.glob(d + '/mp_rank_*/model_optim_rng.pt'))}
mine, theirs, real, te = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == 'te'
assert sorted(mine) == sorted(theirs), (sorted(mine), sorted(theirs))
for rank in theirs:
    a, b = mine[rank]['model'], theirs[rank]['model']
    keys = lambda m: {k for k in m if not (te and k.endswith('._extra_state'))}
    assert keys(a) == keys(b), (rank, sorted(keys(a) ^ keys(b))[:6])
    for k, v in b.items():
        if not torch.is_tensor(v) or k.endswith('._extra_state'):
            continue
        x = a[k]
        assert x.dtype == v.dtype and x.shape == v.shape, (rank, k, x.shape, v.shape)
        if k in ('embedding.word_embeddings.weight', 'output_layer.weight'):
            n = v.shape[0]; r = max(0, min(n, real - int(rank[8:10]) * n)); x, v = x[:r], v[:r]
        assert torch.equal(x, v), (rank, k)
    if te:   # TE names: every extra state megahub writes is one Megatron writes
        assert {k for k in a if k.endswith('._extra_state')} <= {k for k in b if k.endswith('._extra_state')}, rank
    A, B = mine[rank]['args'], theirs[rank]['args']
    for f in ('tensor_model_parallel_size', 'pipeline_model_parallel_size', 'expert_model_parallel_size', 'expert_tensor_parallel_size', 'padded_vocab_size', 'num_experts', 'moe_router_topk', 'moe_ffn_hidden_size', 'moe_shared_expert_intermediate_size', 'moe_shared_expert_gate', 'moe_layer_freq', 'moe_grouped_gemm', 'moe_router_pre_softmax', 'ffn_hidden_size'):
        assert getattr(A, f) == getattr(B, f), (rank, f, getattr(A, f), getattr(B, f))
print('ok', len(theirs))
`;

