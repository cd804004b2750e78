"""The torch kNN (chunked matmul + topk) against faiss's exact IndexFlatIP on the CPU: same neighbours, same
similarities, same conventions (self removed by id, k capped, errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.data.synthetic import random_unit_features
from autolabel.errors import ConfigError, DataError
from autolabel.hilander.search import knn_search
from autolabel.hilander.torch_knn import knn_search_torch


@pytest.mark.parametrize("block_elems", [None, 64])  # one block; many query AND database blocks (64 scores at a time)
def test_matches_faiss_exact_search(block_elems):
    x = random_unit_features(300, 16, seed=1)
    ref_n, ref_s = knn_search(x, 5, method="flat", use_gpu=False)
    nbrs, sims = knn_search_torch(x, 5, device="cpu", block_elems=block_elems)
    assert nbrs.shape == sims.shape == (300, 5) and nbrs.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(nbrs, ref_n)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-7).all()  # sorted by decreasing similarity
    assert not (nbrs == np.arange(300)[:, None]).any()  # nobody is their own neighbour


def test_rows_subset_equals_the_full_search_rows():
    x = random_unit_features(200, 8, seed=2)
    full_n, full_s = knn_search_torch(x, 4, device="cpu")
    rows = np.array([0, 17, 199, 64])
    n, s = knn_search_torch(torch.from_numpy(x), 4, rows=rows, device="cpu", block_elems=50)
    np.testing.assert_array_equal(n, full_n[rows])
    np.testing.assert_allclose(s, full_s[rows], atol=1e-6)


def test_duplicates_stay_neighbours_and_k_is_capped():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    nbrs, sims = knn_search_torch(x, 1, device="cpu")
    assert nbrs[0, 0] == 1 and nbrs[1, 0] == 0  # the exact copy, not the row itself
    np.testing.assert_allclose(sims[:2, 0], 1.0)
    with pytest.warns(UserWarning, match="using k=3"):
        nbrs, sims = knn_search_torch(x, 10, device="cpu")
    assert nbrs.shape == (4, 3)
    assert all(sorted(row) == sorted(set(range(4)) - {i}) for i, row in enumerate(nbrs.tolist()))


def test_errors_and_matmul_precision_restored():
    x = random_unit_features(10, 4)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        knn_search_torch(bad, 2, device="cpu")
    with pytest.raises(DataError, match="2-D"):
        knn_search_torch(x[0], 2, device="cpu")
    with pytest.raises(ConfigError, match="k=0"):
        knn_search_torch(x, 0, device="cpu")
    with pytest.raises(DataError, match="rows"):
        knn_search_torch(x, 2, rows=[10], device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            knn_search_torch(x, 2, device="cuda")
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        knn_search_torch(x, 2, device="cpu")
        assert torch.get_float32_matmul_precision() == "high"  # TF32 is off only during the search
    finally:
        torch.set_float32_matmul_precision(before)
