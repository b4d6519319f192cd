"""Class centres sharded over ranks (Partial FC): every head equals the single-process head on the global batch."""

import pytest
import torch

import qualiface
from _helpers.ddp import run_distributed
from _helpers.sharded_workers import STEPS, B, C, bad_inputs, compare_all_heads, empty_local_sample, sampled_heads
from qualiface.heads import ShardSpec

HEADS = qualiface.list_heads()
WORLD = 2
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _aux(head, batch, dtype=torch.float32):
    values = {"scale": torch.rand(batch, dtype=dtype) * 30 + 10, "quality": torch.rand(batch, dtype=dtype)}
    return {name: values[name] for name in head.requires}


# --------------------------------------------------------------------------------------------- without processes


@pytest.mark.parametrize(("num_classes", "world_size"), [(7, 2), (10, 3), (3, 3), (1000, 8)])
def test_shard_layout_partitions_the_classes(num_classes, world_size):
    specs = [ShardSpec(rank, world_size) for rank in range(world_size)]
    starts = [s.class_start(num_classes) for s in specs]
    sizes = [s.num_local(num_classes) for s in specs]
    assert sum(sizes) == num_classes
    assert starts == [sum(sizes[:r]) for r in range(world_size)]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the first C % W ranks hold one class more


def test_shard_spec_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        ShardSpec(2, 2)
    with pytest.raises(ValueError, match="world_size"):
        ShardSpec(0, 0)


def test_fewer_classes_than_ranks_is_rejected():
    with pytest.raises(ValueError, match="fewer classes than ranks"):
        qualiface.create_head("arcface", 4, 2, shard=ShardSpec(0, 3))


@pytest.mark.parametrize("name", HEADS)
def test_sharded_head_holds_its_block_of_classes(name):
    head = qualiface.create_head(name, 6, 7, shard=ShardSpec(1, 2))
    assert head.weight.shape == (3, 6)
    assert (head.num_classes, head.class_start, head.num_local_classes) == (7, 4, 3)
    for buffer in ("feat_mem", "seen"):
        if hasattr(head, buffer):
            assert getattr(head, buffer).shape[0] == 3
    plain = qualiface.create_head(name, 6, 7)
    assert (plain.class_start, plain.num_local_classes) == (0, 7)


@pytest.mark.parametrize("name", HEADS)
def test_sharded_initialisation_has_the_unsharded_distribution(name):
    num_classes, dim = 4000, 16
    plain = qualiface.create_head(name, dim, num_classes).weight.detach()
    shard = qualiface.create_head(name, dim, num_classes, shard=ShardSpec(1, 2)).weight.detach()
    assert shard.shape == (2000, dim)
    torch.testing.assert_close(shard.std(), plain.std(), rtol=0.03, atol=0.0)
    torch.testing.assert_close(shard.norm(dim=1).mean(), plain.norm(dim=1).mean(), rtol=0.03, atol=0.0)


@pytest.mark.parametrize("name", HEADS)
def test_world_size_one_shard_equals_the_plain_head_exactly(name):
    torch.manual_seed(1)
    plain = qualiface.create_head(name, 8, 5).train()
    torch.manual_seed(1)
    single = qualiface.create_head(name, 8, 5, shard=ShardSpec(0, 1)).train()
    assert torch.equal(plain.weight, single.weight)
    for _ in range(2):  # stateful heads: the second step sees the state of the first
        emb = torch.randn(6, 8) * 20
        labels = torch.randint(0, 5, (6,))
        aux = _aux(plain, 6)
        outs, grads = [], []
        for head in (plain, single):
            head.zero_grad(set_to_none=True)
            leaf = emb.clone().requires_grad_(True)
            out = head(leaf, labels, **aux)
            out.loss.backward()
            outs.append(out)
            grads.append((leaf.grad, head.weight.grad))
        assert torch.equal(outs[0].loss_per_sample, outs[1].loss_per_sample)
        assert torch.equal(outs[0].labels, outs[1].labels)
        assert torch.equal(grads[0][0], grads[1][0])
        assert torch.equal(grads[0][1], grads[1][1])
    for key, value in plain.state_dict().items():
        assert torch.equal(value, single.state_dict()[key]), key


# ------------------------------------------------------------------------------------- two gloo processes, float64


@pytest.fixture(scope="module")
def compared():
    return run_distributed(compare_all_heads, WORLD)


def _pairs(compared, name):
    """``(rank, step, reference, sharded, rows, shard_rows)`` for every rank and step."""
    for rank in range(WORLD):
        res = compared[rank][name]
        rows = slice(rank * B, (rank + 1) * B)
        shard_rows = slice(res["class_start"], res["class_start"] + res["num_local"])
        for step in range(STEPS):
            yield rank, step, res["reference"][step], res["sharded"][step], rows, shard_rows


@pytest.mark.ddp
@pytest.mark.parametrize("name", HEADS)
def test_sharded_outputs_equal_the_reference_on_the_global_batch(compared, name):
    for _, _, ref, out, _, _ in _pairs(compared, name):
        torch.testing.assert_close(out["loss"], ref["loss"], **TOL)
        torch.testing.assert_close(out["loss_per_sample"], ref["loss_per_sample"], **TOL)
        torch.testing.assert_close(out["cos_target"], ref["cos_target"], **TOL)
        assert ("hardest" in out) == ("hardest" in ref)
        if "hardest" in ref:
            torch.testing.assert_close(out["hardest"], ref["hardest"], **TOL)
        assert out["logs"].keys() == ref["logs"].keys()
        for key, value in ref["logs"].items():
            torch.testing.assert_close(out["logs"][key].double(), value.double(), **TOL, msg=key)


@pytest.mark.ddp
@pytest.mark.parametrize("name", HEADS)
def test_sharded_outputs_are_identical_on_every_rank(compared, name):
    for step in range(STEPS):
        first, second = (compared[rank][name]["sharded"][step] for rank in range(WORLD))
        for key in ("loss", "loss_per_sample", "cos_target"):
            assert torch.equal(first[key], second[key]), key
        for key, value in first["logs"].items():
            assert torch.equal(value, second["logs"][key]), key


@pytest.mark.ddp
@pytest.mark.parametrize("name", HEADS)
def test_sharded_gradients_equal_the_reference(compared, name):
    for _, _, ref, out, rows, shard_rows in _pairs(compared, name):
        torch.testing.assert_close(out["grad_emb"], ref["grad_emb"][rows], **TOL)
        assert out["grad_aux"].keys() == ref["grad_aux"].keys()
        for key, grad in ref["grad_aux"].items():
            torch.testing.assert_close(out["grad_aux"][key], grad[rows], **TOL, msg=key)
        torch.testing.assert_close(out["grad_weight"], ref["grad_weight"][shard_rows], **TOL)
        assert ("grad_bias" in out) == ("grad_bias" in ref)
        if ref.get("grad_bias") is not None:
            torch.testing.assert_close(out["grad_bias"], ref["grad_bias"], **TOL)
        else:
            assert out.get("grad_bias") is None


@pytest.mark.ddp
@pytest.mark.parametrize("name", HEADS)
def test_sharded_state_after_training_equals_the_reference(compared, name):
    for _, _, ref, out, _, shard_rows in _pairs(compared, name):
        assert out["state"].keys() == ref["state"].keys()
        for key, value in ref["state"].items():
            expected = value[shard_rows] if value.dim() and value.shape[0] == C else value
            if expected.is_floating_point():
                torch.testing.assert_close(out["state"][key], expected, **TOL, msg=key)
            else:
                assert torch.equal(out["state"][key], expected), key


@pytest.mark.ddp
def test_unitsface_second_step_exercises_the_uss_term(compared):
    ref = compared[0]["unitsface"]["reference"]
    assert float(ref[0]["logs"]["unitsface/bias"]) == 0.0
    assert float(ref[1]["logs"]["unitsface/bias"]) > 0.0  # b initialised from the data, on both ranks alike
    assert float(ref[1]["logs"]["loss/uss"]) > 0.0


@pytest.mark.ddp
@pytest.mark.parametrize("name", HEADS)
def test_sharded_logits_and_labels_describe_the_local_shard(compared, name):
    for rank in range(WORLD):
        res = compared[rank][name]
        for step in range(STEPS):
            out = res["sharded"][step]
            assert out["logits_shape"].tolist() == [WORLD * B, res["num_local"]]
            labels = out["labels"]
            assert labels.shape == (WORLD * B,)
            owned = labels >= 0
            assert owned.any()
            assert (~owned).any()
            assert int(labels.max()) < res["num_local"]
        assert res["attrs"].tolist() == [res["class_start"], res["num_local"], C]


@pytest.fixture(scope="module", params=[False, True], ids=["dense", "sparse"])
def sampled(request):
    return request.param, run_distributed(sampled_heads, WORLD, 0.5, request.param)


@pytest.mark.ddp
@pytest.mark.parametrize("name", [*HEADS, "unitsface_sampled_negatives"])
def test_sampling_under_a_shard_keeps_positives_and_local_budget(sampled, name):
    sparse, results = sampled
    losses = [results[rank][name]["loss"] for rank in range(WORLD)]
    assert torch.isfinite(losses[0])
    assert torch.equal(losses[0], losses[1])
    for rank in range(WORLD):
        res = results[rank][name]
        start, num_local = int(res["class_start"]), int(res["num_local"])
        local = res["global_labels"] - start
        positives = torch.unique(local[(local >= 0) & (local < num_local)])
        index = res["class_index"]
        assert index is not None
        assert index.numel() == max(int(0.5 * num_local), positives.numel())
        assert torch.equal(index, torch.unique(index))  # sorted, unique
        assert torch.isin(positives, index).all()
        labels = res["labels"]
        owned = (local >= 0) & (local < num_local)
        assert torch.equal(labels < 0, ~owned)
        assert torch.equal(index[labels[owned]], local[owned])
        assert bool(res["grad_is_sparse"]) == sparse
        grad = res["grad_weight"]
        unused = torch.ones(num_local, dtype=torch.bool)
        unused[index] = False
        assert torch.equal(grad[unused], torch.zeros_like(grad[unused]))
        assert (grad[positives].abs().sum(dim=1) > 0).all()
        assert torch.isfinite(res["grad_emb"]).all()
        for key, value in res["logs"].items():  # global-batch statistics, the same on every rank
            assert torch.equal(value, results[1 - rank][name]["logs"][key]), key


@pytest.mark.ddp
def test_unitsface_uss_over_sampled_memory_rows_is_active_under_a_shard(sampled):
    _, results = sampled
    assert float(results[0]["unitsface_sampled_negatives"]["logs"]["loss/uss"]) > 0.0


@pytest.mark.ddp
def test_a_rank_that_samples_no_class_neither_fails_nor_hangs():
    results = run_distributed(empty_local_sample, WORLD)
    for name in HEADS:
        first, second = results[0][name], results[1][name]
        assert torch.isfinite(first["loss"]), name
        assert torch.equal(first["loss"], second["loss"]), name
        assert int(second["num_sampled"]) == 0, name
        assert float(second["grad_weight_abs"]) == 0.0, name
        assert float(first["grad_weight_abs"]) > 0.0, name
        for res in (first, second):
            assert torch.isfinite(res["grad_emb"]).all(), name


@pytest.mark.ddp
def test_unequal_batches_and_invalid_labels_raise_on_every_rank():
    messages = run_distributed(bad_inputs, WORLD)
    for msg in messages:
        assert "same local batch size" in msg["sizes"]
        assert "[4, 3]" in msg["sizes"]
        assert msg["after"] == str(WORLD)
    assert "label 7 is outside [0, 7)" in messages[1]["labels"]
    assert "rank(s) [1] received invalid inputs" in messages[0]["labels"]
