"""The whole decode step in C (native/step.c, native/products.c): literal values of its
products, the panel layouts, and logits equal to the lean torch step's."""
from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from grpokit.engine import native
from grpokit.engine.native.step import _panels, _row_panels
from grpokit.engine import stepper as stepper_mod
from sampling import sample
from grpokit.engine.lean import WHOLE_STEP_MAX_BYTES, LeanDecoder, whole_step_reason
from grpokit.engine.threads import available_threads, intra_op_threads, park_openmp_workers

LIB = native.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="no C compiler: the decode step keeps torch's ops")
PANEL = LIB.gk_panel_width() if LIB else 0  # the register tile's width: 64 columns on AVX-512, 16 on AVX2


def _model(arch: str = "qwen2", *, hidden: int = 64, heads: int = 4, kv: int = 2, inter: int = 96,
           vocab: int = 61, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cfg_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    cfg = cfg_cls(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                  num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=128,
                  tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # rows finish at different steps, so the cache drops rows mid-way
        model.lm_head.weight[1] *= 0
        model.lm_head.weight[1] += model.lm_head.weight[2:].mean(0)
    return model


def _gemm(x, w_t, bias=None, y=None):
    """products.c's y (+)= x w + bias through ctypes; w_t is w transposed ([n, k])."""
    w = _panels(LIB, [w_t])
    out = torch.zeros(x.shape[0], w_t.shape[0]) if y is None else y.clone()
    LIB.gk_gemm(x.contiguous().data_ptr(), x.shape[0], x.shape[1], w.data_ptr(), w_t.shape[0],
                None if bias is None else bias.data_ptr(), out.data_ptr(), int(y is not None))
    return out


def test_product_literal_values():
    """x [[1, 2]] times w = [[1, 0, ...], [0, 1, ...]] scaled per column, plus a bias and
    plus y: every column is checked by hand."""
    n = 2 * PANEL + 16  # two whole panels and 16 columns more (a narrower panel on AVX-512)
    w_t = torch.zeros(n, 2)  # nn.Linear layout [out, in]
    w_t[:, 0] = torch.arange(n)  # column j: 1 * j + 2 * 0.5
    w_t[:, 1] = 0.5
    x = torch.tensor([[1.0, 2.0]])
    want = torch.arange(n, dtype=torch.float32)[None] + 1.0
    assert torch.equal(_gemm(x, w_t), want)
    bias = torch.full((n,), 3.0)
    assert torch.equal(_gemm(x, w_t, bias), want + 3.0)
    assert torch.equal(_gemm(x, w_t, bias, y=torch.ones(1, n)), want + 4.0)


@pytest.mark.parametrize("rows,k,n", [(1, 16, 16), (7, 200, 80), (37, 384, 272)])
def test_product_equals_torch(rows, k, n):
    """Row tails (rows not a multiple of the 4- or 6-row register tile), a depth over
    K_CHUNK (summed a chunk at a time) and panels of every width."""
    g = torch.Generator().manual_seed(rows)
    x, w_t, b, y = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g), \
        torch.randn(rows, n, generator=g)
    assert torch.allclose(_gemm(x, w_t), x @ w_t.t(), atol=1e-4)
    assert torch.allclose(_gemm(x, w_t, b, y), y + x @ w_t.t() + b, atol=1e-4)


def test_gradient_product_literal_values_and_torch():
    dy = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [rows, n]
    x = torch.zeros(2, 16)
    x[0, 0], x[1, 0] = 1.0, 10.0
    dw, db = torch.ones(2, 16), torch.zeros(2)  # added into
    assert LIB.gk_gemm_grad(dy.data_ptr(), x.data_ptr(), 2, 2, 16, dw.data_ptr(), db.data_ptr()) == 0
    want = torch.ones(2, 16)
    want[0, 0], want[1, 0] = 1 + 1 * 1 + 3 * 10, 1 + 2 * 1 + 4 * 10
    assert torch.equal(dw, want) and torch.equal(db, torch.tensor([4.0, 6.0]))
    g = torch.Generator().manual_seed(0)
    dy, x = torch.randn(300, 77, generator=g), torch.randn(300, 208, generator=g)  # rows over R_CHUNK, n % 4 != 0
    dw = torch.zeros(77, 208)
    LIB.gk_gemm_grad(dy.data_ptr(), x.data_ptr(), 300, 77, 208, dw.data_ptr(), None)
    assert torch.allclose(dw, dy.t() @ x, atol=1e-3)


# -march level, the CPU flag it needs, and the register tile products.c picks for it
ISAS = [("x86-64", "sse2", "4 floats, 16 registers: 6x2 tile, panels of 8"),
        ("x86-64-v3", "avx2", "8 floats, 16 registers: 6x2 tile, panels of 16"),
        ("x86-64-v4", "avx512f", "16 floats, 32 registers: 4x4 tile, panels of 64")]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 instruction set levels")
@pytest.mark.parametrize("march,needs,_tile", ISAS)
def test_products_on_every_x86_vector_width(tmp_path, march, needs, _tile):
    """The products' register tile depends on the instruction set the library is built
    for; each level builds, and each one this CPU can run computes the same products."""
    flags = [f if f != "-march=native" else f"-march={march}" for f in native.FLAGS]
    target = tmp_path / f"gk_{march}.so"
    try:
        native.build(native._compiler(), target, flags)
    except RuntimeError as err:
        if f"march={march}" in str(err):  # an older compiler without the level's name
            pytest.skip(f"the compiler does not know -march={march}")
        raise
    if needs not in native.cpu_fields().get("flags", "").split():
        pytest.skip(f"built; this CPU lacks {needs} to run it")
    lib = native.load(target)
    assert lib.gk_panel_width() == {"x86-64": 8, "x86-64-v3": 16, "x86-64-v4": 64}[march]
    g = torch.Generator().manual_seed(1)
    for rows, k, n in [(37, 384, 272), (5, 16, 48)]:
        x, w_t, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
        w, y = _panels(lib, [w_t]), torch.zeros(rows, n)
        lib.gk_gemm(x.data_ptr(), rows, k, w.data_ptr(), n, b.data_ptr(), y.data_ptr(), 0)
        assert torch.allclose(y, x @ w_t.t() + b, atol=1e-4)
    dy, x = torch.randn(300, 77, generator=g), torch.randn(300, 208, generator=g)
    dw = torch.zeros(77, 208)
    assert lib.gk_gemm_grad(dy.data_ptr(), x.data_ptr(), 300, 77, 208, dw.data_ptr(), None) == 0
    assert torch.allclose(dw, dy.t() @ x, atol=1e-3)


def test_panel_layouts():
    """Panel c of a [k, n] matrix is the contiguous [k, width] block at offset c k, width
    PANEL but for the last panel."""
    def assert_panels(packed, full):
        k, n = full.shape
        for c in range(0, n, PANEL):
            width = min(PANEL, n - c)
            assert torch.equal(packed[c * k:(c + width) * k], full[:, c:c + width].reshape(-1)), c

    w_t = torch.arange(2 * 80, dtype=torch.float32).view(80, 2)  # [out 80, in 2]: transposed [2, 80]
    packed = _panels(LIB, [w_t[:50], w_t[50:]], pad=16)  # side by side, 16 zero columns
    assert packed.numel() == 2 * 96
    assert_panels(packed, torch.cat([w_t.t(), torch.zeros(2, 16)], dim=1))  # [2, 96]
    m = torch.arange(3 * 80, dtype=torch.float32).view(3, 80)  # rows stacked, not transposed
    rows = _row_panels(LIB, [m[:1], m[1:]], pad=1)
    assert rows.numel() == 4 * 80
    assert_panels(rows, torch.cat([m, torch.zeros(1, 80)]))  # [4, 80]


@pytest.mark.parametrize("arch,heads,kv", [("qwen2", 4, 2), ("llama", 2, 2)])
@pytest.mark.parametrize("threads,by_columns", [(1, False), (2, False), (2, True), (3, True)])
def test_whole_step_logits_equal_the_torch_step(arch, heads, kv, threads, by_columns):
    """Step by step (left-padded prompts, a row dropped mid-way), the whole step's logits
    equal the lean torch step's; its prefill in C equals the torch prefill's last logits."""
    model = _model(arch, heads=heads, kv=kv)
    assert whole_step_reason(model) is None
    ids = torch.tensor([[0, 5, 6, 2], [7, 8, 9, 3], [0, 0, 4, 9]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    plain, whole = LeanDecoder(model, capacity=24, use_native=False), LeanDecoder(model, capacity=24)
    assert plain.whole is None and whole.whole is not None
    whole.threads, whole.whole.by_columns = threads, by_columns  # 3 threads: uneven shares of rows and panels
    logits = [plain.logits(plain.prefill(ids, mask, pos)[:, -1]), whole.prefill_logits(ids, mask, pos)]
    nxt = pos[:, -1] + 1
    for t in range(12):
        assert torch.allclose(logits[0], logits[1], atol=1e-5), f"step {t}"
        tok = logits[0].argmax(-1)
        if t == 5:
            keep = torch.tensor([0, 2])
            for d in (plain, whole):
                d.select(keep)
            tok, nxt = tok[keep], nxt[keep]
        logits = [plain.step(tok, nxt), whole.step(tok, nxt)]
        nxt = nxt + 1


@pytest.mark.parametrize("by_columns", [False, True])
def test_several_tokens_per_row_equal_one_at_a_time(by_columns):
    model = _model()
    ids = torch.tensor([[3, 4, 5], [0, 6, 7]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    a, b = LeanDecoder(model, capacity=16), LeanDecoder(model, capacity=16)
    a.whole.by_columns = by_columns
    a.prefill_logits(ids, mask, pos)
    b.prefill_logits(ids, mask, pos)
    toks = torch.tensor([[8, 9, 10, 11], [12, 13, 14, 15]])
    tpos = pos[:, -1:] + 1 + torch.arange(4)
    a.valid[:, 3:7] = True
    together = a.whole(toks, tpos, 3, a.valid, threads=2)  # [2, 4, V]
    one_by_one = torch.stack([b.step(toks[:, i], tpos[:, i]) for i in range(4)], dim=1)
    assert torch.allclose(together, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        a.whole(toks[:, 0], torch.tensor([0, 10_000]), 7, a.valid, threads=1)


def assert_lean_sampling_matches(model, repeat: int = 1):
    """generate() through the lean step samples the same tokens as through transformers'
    forward (log-probs within 1e-5), while rows finish at different steps."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, 61, (k,), generator=g).tolist() for k in (3, 7, 4, 5, 1, 6, 7, 2)] * repeat
    plain, lean = [sample(model, prompts, max_new_tokens=20, eos_ids={1}, pad_id=0, lean=lean,
                          generator=torch.Generator().manual_seed(3)) for lean in (False, True)]
    assert len({len(c) for c in plain.completion_ids}) > 1, "rows should finish at different steps"
    assert lean.completion_ids == plain.completion_ids
    for a, b in zip(lean.logprobs, plain.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


@pytest.mark.parametrize("row_split_max_bytes", [16 << 20, 0])
def test_sampling_with_the_whole_step_equals_transformers_forward(monkeypatch, row_split_max_bytes):
    """Threads split by rows (small models) and by columns (forced here with a 0 bound)."""
    monkeypatch.setattr("grpokit.engine.native.step.ROW_SPLIT_MAX_BYTES", row_split_max_bytes)
    model = _model()
    whole = LeanDecoder(model, capacity=8).whole
    assert whole is not None and whole.by_columns == (row_split_max_bytes == 0)
    assert_lean_sampling_matches(model, repeat=2)  # groups of repeated prompts: a prefill copy, then row drops


def test_whole_step_applies_to_small_float32_llama_family_models_only(monkeypatch):
    model = _model()
    assert whole_step_reason(model) is None and stepper_mod.loop_threads(model) == 1
    assert "multiple of" in whole_step_reason(_model(hidden=40, heads=2, kv=2, inter=96))
    monkeypatch.setattr("grpokit.engine.lean.WHOLE_STEP_MAX_BYTES", 1000)
    assert "MiB of weights" in whole_step_reason(model) and stepper_mod.loop_threads(model) is None
    assert WHOLE_STEP_MAX_BYTES >= 1 << 20


def test_intra_op_threads_restores_and_reports_the_outer_count():
    before = torch.get_num_threads()
    with intra_op_threads(1, park=True):
        assert torch.get_num_threads() == 1 and available_threads() == before
        with intra_op_threads(1):
            assert available_threads() == before  # the outermost count
    assert torch.get_num_threads() == before and available_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == before
    torch.ones(1000, 1000).exp()  # a parallel region; then its workers are parked (or no runtime is found)
    assert park_openmp_workers() in (True, False)
    assert torch.ones(1000, 1000).exp().sum() > 0  # torch starts them again


def test_openmp_workers_stop_burning_a_core_when_parked():
    """After a parallel region GNU OpenMP's workers spin; parked, they burn no CPU."""
    import time

    from grpokit.engine.threads import _openmp_runtime

    if _openmp_runtime() is None:
        pytest.skip("no OpenMP runtime found to park")
    with intra_op_threads(2):  # the suite runs on one thread (conftest)
        torch.ones(2000, 2000).exp()
        assert park_openmp_workers()
        c0 = time.process_time()
        time.sleep(0.05)
        assert time.process_time() - c0 < 0.003  # unparked: 7-8 ms of spinning here


def test_ctypes_structs_mirror_the_c_structs():
    """A field added on one side only would make the kernels read garbage (or crash)."""
    from grpokit.engine.native.step import _Layer, _Model

    got = torch.zeros(4, dtype=torch.int64)
    LIB.gk_struct_layout(got.data_ptr())
    assert got.tolist() == [ctypes.sizeof(_Layer), _Layer.t_down.offset, ctypes.sizeof(_Model), _Model.t_head.offset]


def test_dropped_rows_are_not_copied_and_later_copies_follow_them():
    """Rows that only leave stay where their caches are (a row map, no copy); a later
    select that repeats or reorders rows copies from where they are."""
    model = _model()
    ids = torch.tensor([[3, 4, 5], [0, 6, 7], [8, 9, 10], [0, 0, 11]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    plain, whole = LeanDecoder(model, capacity=16, use_native=False), LeanDecoder(model, capacity=16)
    logits = [plain.logits(plain.prefill(ids, mask, pos)[:, -1]), whole.prefill_logits(ids, mask, pos)]
    nxt = pos[:, -1] + 1
    cache = whole.k[0]
    for t, keep in enumerate([None, torch.tensor([0, 2, 3]), None, torch.tensor([2, 2, 0]), None]):
        assert torch.allclose(logits[0], logits[1], atol=1e-5), f"step {t}"
        tok = logits[0].argmax(-1)
        if keep is not None:
            for d in (plain, whole):
                d.select(keep)
            tok, nxt = tok[keep], nxt[keep]
            if t == 1:
                assert whole.k[0] is cache and whole.rows.tolist() == [0, 2, 3]  # no copy
            else:
                assert whole.rows is None and whole.k[0].shape[0] == 3  # rows 3, 3 and 0 of the first batch
        logits = [plain.step(tok, nxt), whole.step(tok, nxt)]
        nxt = nxt + 1
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
