"""The scoring math of embed / rank / classify, on a fake encoder with known vectors."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from clip_sagemaker.errors import ApiError
from clip_sagemaker.inputs import ImageSource
from clip_sagemaker.tasks import build_class_weights as tasks_build_class_weights
from clip_sagemaker.tasks import (DEFAULT_MARGIN, DEFAULT_PROMPT_TEMPLATE, ClassifyTask, EmbedTask, Item, RankTask,
                                  classify, embed, encode_items, l2_normalize, rank, render_prompt, run, sigmoid,
                                  softmax)

DIM = 8


class FakeEncoder:
    """Fixed vectors: from `table` when the key is there, otherwise seeded by the text / image value."""

    def __init__(self, logit_scale: float = 100.0, logit_bias=None, table=None):
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.table = dict(table or {})
        self.calls: list[tuple[str, list[str]]] = []

    def vector(self, kind: str, value: str) -> np.ndarray:
        key = f"{kind}:{value}"
        if key in self.table:
            return np.asarray(self.table[key], dtype=np.float32)
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        # Unnormalised on purpose: the tasks must normalise themselves.
        return (rng.standard_normal(DIM) * rng.uniform(0.5, 5.0)).astype(np.float32)

    def encode_texts(self, texts):
        self.calls.append(("text", list(texts)))
        return np.stack([self.vector("text", t) for t in texts])

    def encode_images(self, images):
        assert all(isinstance(i, ImageSource) for i in images)
        self.calls.append(("image", [i.value for i in images]))
        return np.stack([self.vector("image", i.value) for i in images])

    TEMPLATE_SETS = {"pair": ("a photo of a {label}", "a drawing of a {label}")}

    def template_set(self, name):
        if name not in self.TEMPLATE_SETS:
            raise ApiError(f"no set {name}", field="prompt_templates")
        return self.TEMPLATE_SETS[name]

    def class_weights(self, labels, templates, build):
        """No cache here: the engine's is tested on the real model (test_prompt_ensembles.py)."""
        return build()


def img(value: str, index: int = 0) -> ImageSource:
    return ImageSource(value, f"images[{index}]")


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- primitives ---------------------------------------------------------------------------------------------

def test_l2_normalize_gives_unit_rows_in_the_same_direction():
    v = np.array([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]])
    out = l2_normalize(v)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0], [2 ** -0.5, 2 ** -0.5]])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)


def test_l2_normalize_leaves_a_zero_vector_zero_without_nans():
    out = l2_normalize(np.zeros((2, 4), np.float32))
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out, 0.0)


def test_l2_normalize_of_a_single_vector():
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 5.0, 0.0])), [0.0, 1.0, 0.0])


def test_softmax_matches_the_formula_per_row():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-5.0, 10.0, 2.5]])
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = softmax(logits)
    np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[1], [1 / 3, 1 / 3, 1 / 3])


def test_softmax_is_stable_for_large_logits():
    out = softmax(np.array([1000.0, 1001.0]))
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, [1 / (1 + np.e), np.e / (1 + np.e)])


def test_sigmoid_matches_the_formula():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)))
    assert sigmoid(np.array(0.0)) == 0.5
    np.testing.assert_allclose(sigmoid(x) + sigmoid(-x), 1.0)


def test_render_prompt_accepts_named_and_positional_placeholders():
    assert render_prompt("a photo of a {label}", "cat") == "a photo of a cat"
    assert render_prompt("a photo of a {}", "cat") == "a photo of a cat"
    assert render_prompt("{label}, i.e. {}", "dog") == "dog, i.e. dog"


# --- encode_items / embed -----------------------------------------------------------------------------------

def test_encode_items_keeps_order_and_calls_each_modality_once():
    enc = FakeEncoder()
    items = [Item("a cat"), Item(img("X", 1)), Item("a dog"), Item(img("Y", 3)), Item("a bird")]
    out = encode_items(items, enc)
    assert enc.calls == [("text", ["a cat", "a dog", "a bird"]), ("image", ["X", "Y"])]
    expected = np.stack([enc.vector("text", "a cat"), enc.vector("image", "X"), enc.vector("text", "a dog"),
                         enc.vector("image", "Y"), enc.vector("text", "a bird")])
    np.testing.assert_array_equal(out, expected)


def test_encode_items_with_one_modality_makes_no_call_for_the_other():
    enc = FakeEncoder()
    encode_items([Item("a"), Item("b")], enc)
    assert enc.calls == [("text", ["a", "b"])]
    enc = FakeEncoder()
    encode_items([Item(img("P")), Item(img("Q"))], enc)
    assert enc.calls == [("image", ["P", "Q"])]


def test_item_knows_its_modality():
    assert Item("text").is_text is True
    assert Item(img("abc")).is_text is False


def test_embed_normalises_by_default_and_keeps_the_item_order():
    enc = FakeEncoder()
    result = embed(EmbedTask((Item("a"), Item(img("I")), Item("b"))), enc)
    assert result.normalized is True
    expected = unit([enc.vector("text", "a"), enc.vector("image", "I"), enc.vector("text", "b")])
    np.testing.assert_allclose(result.vectors, expected, rtol=1e-6)
    assert sorted(enc.calls) == [("image", ["I"]), ("text", ["a", "b"])]  # one call per modality


def test_embed_without_normalisation_returns_raw_vectors():
    enc = FakeEncoder()
    result = embed(EmbedTask((Item("a"),), normalize=False), enc)
    assert result.normalized is False
    np.testing.assert_array_equal(result.vectors, [enc.vector("text", "a")])
    assert enc.calls == [("text", ["a"])]


# --- rank ---------------------------------------------------------------------------------------------------

def _rank_expected(enc, queries, candidates):
    def vectors(items):
        return unit([enc.vector("text", i.value) if i.is_text else enc.vector("image", i.value.value)
                     for i in items])
    return vectors(queries) @ vectors(candidates).T


def test_rank_scores_cosine_and_softmax_of_scaled_cosine_per_row():
    enc = FakeEncoder(logit_scale=37.5)
    queries = (Item("q text"), Item(img("q image")))
    candidates = (Item("c1"), Item(img("c2")), Item("c3"), Item(img("c4")))
    result = rank(RankTask(queries, candidates), enc)
    cosine = _rank_expected(enc, queries, candidates)
    assert result.scoring == "softmax"
    assert result.cosine_similarities.shape == (2, 4)
    np.testing.assert_allclose(result.cosine_similarities, cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, np_softmax(37.5 * cosine), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0)


def test_rank_with_a_logit_bias_scores_each_pair_with_a_sigmoid():
    enc = FakeEncoder(logit_scale=10.0, logit_bias=-2.5)
    queries = (Item("q1"), Item("q2"), Item(img("q3")))
    candidates = (Item(img("c1")), Item(img("c2")))
    result = rank(RankTask(queries, candidates), enc)
    cosine = _rank_expected(enc, queries, candidates)
    assert result.scoring == "sigmoid"
    np.testing.assert_allclose(result.cosine_similarities, cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, 1 / (1 + np.exp(-(10.0 * cosine - 2.5))), rtol=1e-5)
    # Independent per pair: rows do not sum to one.
    assert not np.allclose(result.probabilities.sum(axis=1), 1.0)


def test_rank_of_identical_query_and_candidate_has_cosine_one():
    enc = FakeEncoder()
    result = rank(RankTask((Item("same"),), (Item("same"), Item("other"))), enc)
    assert result.cosine_similarities[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert result.probabilities[0, 0] > result.probabilities[0, 1]


def test_rank_a_zero_logit_bias_still_means_sigmoid():
    enc = FakeEncoder(logit_scale=1.0, logit_bias=0.0)
    result = rank(RankTask((Item("a"),), (Item("b"),)), enc)
    assert result.scoring == "sigmoid"
    cos = result.cosine_similarities[0, 0]
    assert result.probabilities[0, 0] == pytest.approx(1 / (1 + np.exp(-cos)))


def test_run_dispatches_on_task_type():
    enc = FakeEncoder()
    assert run(EmbedTask((Item("a"),)), enc).normalized is True
    assert run(RankTask((Item("a"),), (Item("b"),)), enc).scoring == "softmax"
    assert len(run(ClassifyTask((img("I"),), ("cat", "dog")), enc)) == 1


# --- classify -----------------------------------------------------------------------------------------------

LABELS = ("cat", "dog", "boat", "car", "tree")
E = np.eye(DIM)


def _classify_encoder(template=DEFAULT_PROMPT_TEMPLATE, images=None):
    table = {f"text:{render_prompt(template, label)}": E[i] * (i + 1) for i, label in enumerate(LABELS)}
    for name, vector in (images or {}).items():
        table[f"image:{name}"] = vector
    return FakeEncoder(table=table)


def _expected_probabilities(enc, task):
    [template] = task.templates
    prompts = unit([enc.vector("text", render_prompt(template, label)) for label in task.labels])
    images = unit([enc.vector("image", i.value) for i in task.images])
    return np_softmax(task.logit_scale * images @ prompts.T)


def _check_against_numpy(enc, task, results):
    probs = _expected_probabilities(enc, task)
    assert len(results) == len(task.images)
    for row, result in zip(probs, results):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        k = min(task.top_k, len(task.labels))
        assert result.top_indices == order[:k]
        assert result.top_labels == [task.labels[i] for i in order[:k]]
        # The encoder's vectors are float32, so allow float32 rounding in the normalisation.
        np.testing.assert_allclose(result.top_probabilities, row[order[:k]], rtol=1e-4, atol=1e-7)
        assert result.confidence == pytest.approx(row.max(), rel=1e-5)
        assert result.selected == [i for i in order[:k] if row.max() - row[i] <= task.margin]
        if task.class_ids is None:
            assert result.classification is None
        else:
            assert result.classification == int(any(task.class_ids[i] for i in result.selected))


def test_classify_is_softmax_of_100_cosine_with_top_three_best_first():
    rng = np.random.default_rng(5)
    images = {f"img{i}": rng.standard_normal(DIM) for i in range(4)}
    enc = _classify_encoder(images=images)
    task = ClassifyTask(tuple(img(n, i) for i, n in enumerate(images)), LABELS)
    results = classify(task, enc)
    _check_against_numpy(enc, task, results)
    for result in results:
        assert len(result.top_indices) == 3
        assert result.top_probabilities == sorted(result.top_probabilities, reverse=True)
        assert result.confidence == result.top_probabilities[0]
        assert result.classification is None


def test_classify_encodes_rendered_prompts_once_and_images_once():
    enc = _classify_encoder(images={"a": E[0], "b": E[1]})
    classify(ClassifyTask((img("a"), img("b", 1)), LABELS), enc)
    assert enc.calls == [("text", [f"a photo of a {label}" for label in LABELS]), ("image", ["a", "b"])]


def test_clear_winner_is_the_only_selected_class():
    enc = _classify_encoder(images={"cat": E[0] + 0.1 * E[1]})
    [result] = classify(ClassifyTask((img("cat"),), LABELS, class_ids=(0, 1, 1, 1, 1)), enc)
    assert result.top_indices[0] == 0
    assert result.top_labels[0] == "cat"
    assert result.selected == [0]
    assert result.confidence > 0.99
    assert result.classification == 0  # the only selected class has a falsy id


def test_near_tie_within_the_margin_selects_both_classes():
    # Cosines differ by 4e-4 / sqrt(2): softmax(100 x cos) probabilities differ by about 0.014 < 0.02.
    image = unit(E[0] + (1 - 4e-4) * E[1])
    enc = _classify_encoder(images={"tie": image})
    task = ClassifyTask((img("tie"),), LABELS, class_ids=(0, "dog-id", 0, 0, 0))
    [result] = classify(task, enc)
    probs = _expected_probabilities(enc, task)[0]
    assert 0 < probs[0] - probs[1] <= DEFAULT_MARGIN
    assert result.selected == [0, 1]
    assert result.classification == 1  # "dog-id" is truthy
    _check_against_numpy(enc, task, [result])


def test_runner_up_just_outside_the_margin_is_not_selected():
    # Cosines differ by 1e-3 / sqrt(2): probabilities differ by about 0.035 > 0.02.
    image = unit(E[0] + (1 - 1e-3) * E[1])
    enc = _classify_encoder(images={"close": image})
    task = ClassifyTask((img("close"),), LABELS, class_ids=(0, 1, 0, 0, 0))
    [result] = classify(task, enc)
    probs = _expected_probabilities(enc, task)[0]
    assert probs[0] - probs[1] > DEFAULT_MARGIN
    assert result.selected == [0]
    assert result.classification == 0
    _check_against_numpy(enc, task, [result])


@pytest.mark.parametrize("class_ids, expected", [
    ((0, 0, 0, 0, 0), 0),
    ((False, "", 0, 0, 0), 0),
    ((0, 1, 0, 0, 0), 1),
    ((0, True, 0, 0, 0), 1),
    (("no", 0, 0, 0, 0), 1),
    ((None, 0.0, 1, 1, 1), 0),
    (None, None),
])
def test_classification_is_one_if_any_selected_class_id_is_truthy(class_ids, expected):
    image = unit(E[0] + E[1])  # cat and dog tie exactly
    enc = _classify_encoder(images={"tie": image})
    [result] = classify(ClassifyTask((img("tie"),), LABELS, class_ids=class_ids), enc)
    assert result.selected == [0, 1]
    assert result.classification == expected


def test_only_the_top_k_classes_take_part_in_the_decision():
    # All five classes within the margin of the best; the two below the top 3 carry the only truthy ids.
    # Seed 003 loops over its top-3 list, so its decision is 0; deciding over every class would say 1.
    enc = FakeEncoder(table={f"text:{render_prompt(DEFAULT_PROMPT_TEMPLATE, label)}": unit(E[0] + 1e-4 * i * E[1])
                             for i, label in enumerate(LABELS)} | {"image:flat": unit(np.ones(DIM))})
    task = ClassifyTask((img("flat"),), LABELS, class_ids=(1, 1, 0, 0, 0))
    [result] = classify(task, enc)
    probs = _expected_probabilities(enc, task)[0]
    assert probs.max() - probs.min() <= DEFAULT_MARGIN  # a near-uniform answer: all five within the margin
    assert result.top_indices == [4, 3, 2]
    assert result.selected == [4, 3, 2]
    assert result.classification == 0
    _check_against_numpy(enc, task, [result])


def test_exact_tie_keeps_the_earlier_class_first():
    enc = _classify_encoder(images={"tie": E[0] + E[1]})
    [result] = classify(ClassifyTask((img("tie"),), LABELS), enc)
    assert result.top_indices[:2] == [0, 1]
    assert result.top_probabilities[0] == pytest.approx(result.top_probabilities[1])
    assert result.top_probabilities[0] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("n_labels", [1, 2, 3])
def test_top_k_is_at_most_the_number_of_classes(n_labels):
    labels = LABELS[:n_labels]
    enc = _classify_encoder(images={"x": np.ones(DIM)})
    [result] = classify(ClassifyTask((img("x"),), labels), enc)
    assert len(result.top_indices) == n_labels
    assert sorted(result.top_indices) == list(range(n_labels))
    assert sum(result.top_probabilities) == pytest.approx(1.0)


def test_single_class_always_has_probability_one():
    enc = _classify_encoder(images={"x": E[3]})
    [result] = classify(ClassifyTask((img("x"),), ("cat",), class_ids=(7,)), enc)
    assert result.top_probabilities == [pytest.approx(1.0)]
    assert result.selected == [0]
    assert result.classification == 1


@pytest.mark.parametrize("template", ["a photo of a {label}", "a photo of a {}", "{label}", "this is {} ({label})"])
def test_prompt_template_with_either_placeholder_renders_each_label(template):
    enc = _classify_encoder(template=template, images={"x": E[2] + 0.2 * E[4]})
    task = ClassifyTask((img("x"),), LABELS, templates=(template,))
    [result] = classify(task, enc)
    assert enc.calls[0] == ("text", [render_prompt(template, label) for label in LABELS])
    assert result.top_labels[0] == "boat"  # the template's own vectors were used, not random ones
    _check_against_numpy(enc, task, [result])


def test_custom_top_k_margin_and_logit_scale_are_honoured():
    rng = np.random.default_rng(11)
    images = {f"r{i}": rng.standard_normal(DIM) for i in range(3)}
    enc = _classify_encoder(images=images)
    sources = tuple(img(n, i) for i, n in enumerate(images))
    for top_k, margin, scale in [(1, 0.0, 100.0), (5, 0.5, 10.0), (2, 1.0, 1.0), (10, 0.1, 50.0)]:
        task = ClassifyTask(sources, LABELS, class_ids=(0, 0, 1, 0, 1), top_k=top_k, margin=margin,
                            logit_scale=scale)
        results = classify(task, enc)
        _check_against_numpy(enc, task, results)
        for result in results:
            assert len(result.top_indices) == min(top_k, len(LABELS))
            if margin >= 1.0:
                assert result.selected == result.top_indices  # every top class, and only those
            if margin == 0.0:
                assert result.selected == [result.top_indices[0]]


def test_lower_logit_scale_flattens_the_probabilities():
    enc = _classify_encoder(images={"x": E[0] + 0.5 * E[1]})
    [sharp] = classify(ClassifyTask((img("x"),), LABELS, logit_scale=100.0), enc)
    [flat] = classify(ClassifyTask((img("x"),), LABELS, logit_scale=1.0), enc)
    assert sharp.confidence > 0.99
    assert flat.confidence < 0.5
    cos = unit(E[0] + 0.5 * E[1]) @ unit(E[:5]).T
    assert flat.confidence == pytest.approx(np_softmax(cos).max())


# --- prompt ensembles ---------------------------------------------------------------------------------------

def test_an_ensembles_class_weight_is_the_normalised_mean_of_its_normalised_prompts():
    enc = FakeEncoder()
    templates = ("a photo of a {label}", "a drawing of a {}", "{label}!")
    weights = tasks_build_class_weights(("cat", "dog"), templates, enc)
    assert enc.calls == [("text", [render_prompt(t, label) for label in ("cat", "dog") for t in templates])]
    for row, label in zip(weights, ("cat", "dog")):
        mean = unit([enc.vector("text", render_prompt(t, label)) for t in templates]).mean(axis=0)
        np.testing.assert_allclose(row, unit(mean), rtol=1e-6)


def test_classify_with_a_named_set_encodes_every_label_with_every_template():
    enc = _classify_encoder(images={"x": E[0]})
    [result] = classify(ClassifyTask((img("x"),), LABELS, templates="pair"), enc)
    prompts = [render_prompt(t, label) for label in LABELS for t in FakeEncoder.TEMPLATE_SETS["pair"]]
    assert enc.calls == [("text", prompts), ("image", ["x"])]
    weights = tasks_build_class_weights(LABELS, FakeEncoder.TEMPLATE_SETS["pair"], _classify_encoder())
    expected = np_softmax(100 * unit(E[0]) @ weights.astype(np.float64).T)
    np.testing.assert_allclose(result.top_probabilities, np.sort(expected)[::-1][:3], rtol=1e-5, atol=1e-12)


def test_too_many_prompts_are_refused_before_anything_is_encoded():
    enc = FakeEncoder()
    task = ClassifyTask((img("x"),), LABELS, templates="pair", max_prompts=9)  # 5 labels x 2 templates
    with pytest.raises(ApiError) as raised:
        classify(task, enc)
    assert raised.value.status == 413 and "MAX_CLASSIFY_PROMPTS" in raised.value.message
    assert enc.calls == []
    assert len(classify(ClassifyTask((img("x"),), LABELS, templates="pair", max_prompts=10), enc)) == 1
