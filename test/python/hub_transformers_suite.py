# transformers against `megahub hub serve`: push_to_hub, from_pretrained(repo) and a trust_remote_code fetch.
# argv: write token of "local", work folder. Prints one JSON line per check, like hub_client_suite.py.
import json, os, sys, traceback

import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

TOKEN, WORK = sys.argv[1:3]
api = HfApi(token=TOKEN)
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def push_to_hub_then_from_pretrained():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32)
    model = BertModel(cfg).eval()
    model.push_to_hub("local/tiny-bert", token=TOKEN)
    loaded = AutoModel.from_pretrained("local/tiny-bert", token=TOKEN, cache_dir=os.path.join(WORK, "tf-cache")).eval()
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        a, b = model(ids).last_hidden_state, loaded(ids).last_hidden_state
    assert torch.equal(a, b), (a - b).abs().max()


REMOTE_CONFIG = '''from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
'''
REMOTE_MODEL = '''import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, x):
        return self.proj(x)
'''


@check
def trust_remote_code_fetch():
    d = os.path.join(WORK, "remote")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "configuration_tiny.py"), "w") as f:
        f.write(REMOTE_CONFIG)
    with open(os.path.join(d, "modeling_tiny.py"), "w") as f:
        f.write(REMOTE_MODEL)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "tiny-remote", "width": 4, "architectures": ["TinyRemoteModel"],
                   "auto_map": {"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                                "AutoModel": "modeling_tiny.TinyRemoteModel"}}, f)
    w = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 7
    save_file({"proj.weight": w, "proj.bias": torch.ones(4)}, os.path.join(d, "model.safetensors"))
    api.create_repo("local/tiny-remote", exist_ok=True)
    api.upload_folder(repo_id="local/tiny-remote", folder_path=d)
    cache = os.path.join(WORK, "tf-cache2")
    cfg = AutoConfig.from_pretrained("local/tiny-remote", trust_remote_code=True, token=TOKEN, cache_dir=cache)
    assert type(cfg).__name__ == "TinyRemoteConfig" and cfg.width == 4
    model = AutoModel.from_pretrained("local/tiny-remote", trust_remote_code=True, token=TOKEN, cache_dir=cache)
    assert type(model).__name__ == "TinyRemoteModel"
    x = torch.ones(1, 4)
    assert torch.allclose(model(x), x @ w.T + 1)


for fn in CHECKS:
    try:
        fn()
        print(json.dumps({"check": fn.__name__, "ok": True}), flush=True)
    except Exception as e:
        tb = traceback.format_exc().strip().splitlines()[-6:]
        print(json.dumps({"check": fn.__name__, "ok": False, "error": f"{type(e).__name__}: {e} | {' / '.join(tb)}"}), flush=True)
